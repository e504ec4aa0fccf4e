#!/usr/bin/env bash
# make-disk.sh OUT.raw — build a realistic 4 GiB raw disk for the benchmarks.
#
# Layout: GPT with one Linux partition starting at 1 MiB and filling the disk, holding
# an ext4 file system made with `mke2fs -t ext4 -d DIR` from files under /usr.
# The file system is built into a separate image file and then written into the
# partition with `dd conv=notrunc,sparse`, so OUT.raw stays sparse.
#
# /usr is usually bigger (or smaller) than the wanted amount of data. If it holds more
# than DATA_BYTES, the first files of /usr in byte-wise sorted path order are taken until
# DATA_BYTES is reached (hard-linked into a staging folder when possible, copied
# otherwise); if it holds less, all of it is used. The summary printed at the end, also
# written to OUT.raw.info, says what was actually put in.
#
# Environment:
#   DISK_SIZE   disk size in bytes            (default 4294967296 = 4 GiB)
#   DATA_SOURCE folder to take files from     (default /usr)
#   DATA_BYTES  how much file data to put in  (default 1600000000, about 1.6 GB)
#
# Needs sgdisk (Debian: gdisk) or parted, mke2fs (e2fsprogs) and coreutils; when
# running as root (or with password-less sudo) missing packages are installed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

[[ $# -eq 1 ]] || { echo "usage: $0 OUT.raw" >&2; exit 2; }
out="$1"
DISK_SIZE="${DISK_SIZE:-4294967296}"
DATA_SOURCE="${DATA_SOURCE:-/usr}"
DATA_BYTES="${DATA_BYTES:-1600000000}"
SECTOR=512

ensure_commands mke2fs:e2fsprogs e2fsck:e2fsprogs dumpe2fs:e2fsprogs
if ! command -v sgdisk >/dev/null && ! command -v parted >/dev/null; then
  ensure_commands sgdisk:gdisk
fi

outdir="$(cd "$(dirname "$out")" && pwd)"
out="$outdir/$(basename "$out")"

# Room for: the sparse disk, the file-system image and (if copying) the staging tree.
need_kib=$(( (DATA_BYTES * 3 + 256 * 1024 * 1024) / 1024 ))
avail_kib="$(df -Pk "$outdir" | awk 'NR==2 {print $4}')"
if ((avail_kib < need_kib)); then
  die "not enough space in $outdir: $((avail_kib / 1024)) MiB free, want about $((need_kib / 1024)) MiB"
fi

scratch="$(mktemp -d "$outdir/.make-disk.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# ---- 1. Partition table ---------------------------------------------------------
log "creating $out ($DISK_SIZE bytes, GPT)"
rm -f "$out"
truncate -s "$DISK_SIZE" "$out"
if command -v sgdisk >/dev/null; then
  # Fixed GUIDs so the same input data gives the same image.
  sgdisk -o -U 5d1a0b42-3c77-4f0e-9a52-6f3b1c2d4e5f \
    -n 1:2048:0 -t 1:8300 -c 1:bench-data -u 1:8c4f2e1a-7b3d-4a6c-9e15-2f7d0a9b3c61 \
    "$out" >/dev/null 2>&1 || die "sgdisk failed"
  first="$(sgdisk -i 1 "$out" | awk '/^First sector:/ {print $3}')"
  last="$(sgdisk -i 1 "$out" | awk '/^Last sector:/ {print $3}')"
else
  parted -s "$out" mklabel gpt mkpart bench-data ext4 1MiB 100%
  read -r first last < <(parted -s -m "$out" unit s print | awk -F: '$1 == "1" {sub(/s$/,"",$2); sub(/s$/,"",$3); print $2, $3}')
fi
[[ "$first" =~ ^[0-9]+$ && "$last" =~ ^[0-9]+$ ]] || die "could not read the partition bounds"
part_offset=$((first * SECTOR))
part_bytes=$(((last - first + 1) * SECTOR))
log "partition 1: sectors $first..$last (offset $part_offset, $part_bytes bytes)"

# ---- 2. Choose the data ---------------------------------------------------------
src_bytes="$(du -sb --apparent-size "$DATA_SOURCE" 2>/dev/null | awk '{print $1}')" || true
src_bytes="${src_bytes:-0}"
stage="$DATA_SOURCE"
stage_mode="whole $DATA_SOURCE"
if ((src_bytes > DATA_BYTES)); then
  log "$DATA_SOURCE holds $src_bytes bytes; taking the first $DATA_BYTES bytes of files in sorted path order"
  list="$scratch/files"
  # Regular files and symlinks we can read, "path<TAB>size", sorted by path; stop at
  # the target. Names containing newlines or tabs are skipped.
  (cd "$DATA_SOURCE" && find . -xdev \( -type f -readable -o -type l \) -printf '%p\t%s\n') |
    awk -F'\t' 'NF == 2' | LC_ALL=C sort -t$'\t' -k1,1 |
    awk -F'\t' -v want="$DATA_BYTES" 'sum < want { sum += $2; print $1 }' >"$list"
  stage="$scratch/tree"
  mkdir "$stage"
  if (cd "$DATA_SOURCE" && tr '\n' '\0' <"$list" | xargs -0 cp -P -l --parents -t "$stage") 2>/dev/null; then
    stage_mode="first $(wc -l <"$list") files of $DATA_SOURCE (hard links)"
  else
    rm -rf "$stage"; mkdir "$stage"
    (cd "$DATA_SOURCE" && tr '\n' '\0' <"$list" | tar --null --no-recursion -T - -cf -) | tar -C "$stage" -xf -
    stage_mode="first $(wc -l <"$list") files of $DATA_SOURCE (copied)"
  fi
fi
data_bytes="$(du -sb --apparent-size "$stage" | awk '{print $1}')"
data_files="$(find "$stage" -xdev \( -type f -o -type l \) | wc -l)"
log "data: $data_bytes bytes in $data_files files ($stage_mode)"

# ---- 3. File system image, then into the partition --------------------------------
fsimg="$scratch/fs.img"
truncate -s "$part_bytes" "$fsimg"
log "mke2fs -t ext4 -d ... ($part_bytes bytes)"
mke2fs -q -F -t ext4 -L bench-data \
  -U 3f6c2a9e-1d4b-4e8a-b7c5-0a9d8e7f6b51 \
  -E hash_seed=a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d,root_owner=0:0 \
  -d "$stage" "$fsimg"
e2fsck -f -n "$fsimg" >/dev/null 2>&1 || die "e2fsck found problems in the new file system"
read -r bsize bcount bfree < <(dumpe2fs -h "$fsimg" 2>/dev/null |
  awk -F: '/^Block size/ {s=$2} /^Block count/ {c=$2} /^Free blocks/ {f=$2} END {print s+0, c+0, f+0}')
fs_used=$(((bcount - bfree) * bsize))

log "dd into the partition at offset $part_offset"
dd if="$fsimg" of="$out" bs=4M seek="$part_offset" oflag=seek_bytes conv=notrunc,sparse status=none
rm -f "$fsimg"

# ---- 4. Summary -----------------------------------------------------------------
allocated=$(($(stat -c %b "$out") * $(stat -c %B "$out")))
# key=value lines, values shell-quoted so the file can be sourced.
{
  printf '%s=%q\n' disk "$out"
  printf '%s=%q\n' disk_size "$DISK_SIZE"
  printf '%s=%q\n' partition_offset "$part_offset"
  printf '%s=%q\n' partition_bytes "$part_bytes"
  printf '%s=%q\n' data_source "$DATA_SOURCE"
  printf '%s=%q\n' data_source_bytes "$src_bytes"
  printf '%s=%q\n' data_selection "$stage_mode"
  printf '%s=%q\n' data_bytes "$data_bytes"
  printf '%s=%q\n' data_files "$data_files"
  printf '%s=%q\n' fs_used_bytes "$fs_used"
  printf '%s=%q\n' disk_allocated_bytes "$allocated"
} >"$out.info"
cat "$out.info"

#!/usr/bin/env bash
# run-files.sh — file-level restore (issue 13's speed targets), on a 1 GiB GPT disk holding an
# ext4 of SRC (default /usr/share, made by `mke2fs -d`), as monolithicSparse:
#   1. `vmdk-files ls -R` against sleuthkit's `fls -r -p`, which reads VMDK itself (libvmdk,
#      `-i vmdk`), on the same VMDK; and against `fls -r -p` on the raw disk;
#   2. `vmdk-files extract /` against `debugfs -R 'rdump / DIR'` on the raw disk and against
#      `tsk_recover -a` on the VMDK; and `extract --threads 0` (no writer threads) against debugfs;
#   3. one large file: `vmdk-files cat` against `vmdk-inspect cat` of the same number of bytes
#      from the file's first block on the disk;
#   4. `vmdk-files ls` of one folder on a 2 TiB sparse GPT disk with an ext4 (target < 50 ms),
#      against `fls -i vmdk` of the same folder;
#   peak RSS of every run (GNU time), target < 64 MiB.
# Targets: ls -R at most 0.7x fls on the same VMDK; extract at least as fast as the faster of
# debugfs and tsk_recover.
#
# Every job runs under `nice -n 5`, one warm-up run per side, then BENCH_ROUNDS (default 3)
# rounds alternating which side goes first; the table has medians. Before timing, our listing
# is checked against fls's (the same names) and our extraction against debugfs's (the same
# files with the same md5; the same types, modes, sizes, owners, mtimes and link targets).
#
# Environment:
#   VMDK_BENCH_DIR  work dir (default /tmp/vmdk-bench-files); images are made once and reused
#   BENCH_ROUNDS    timed rounds per job (default 3)
#   SRC             the tree copied into the file system (default /usr/share)
#   VMDK_FILES, VMDK_INSPECT  use these binaries instead of building them (release)
#   JOBS            which jobs to run (default "ls extract cat big")
#   OUT             where the extract jobs write their trees (default /dev/shm/vmdk-bench-files-out,
#                   a tmpfs: on the VM's disk each run's ~700 MB of writeback landed on the next
#                   run, whichever tool it was, and the same command took 2 s to 40 s)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-files}"
SRC="${SRC:-/usr/share}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
OUT="${OUT:-/dev/shm/vmdk-bench-files-out}"
mkdir -p "$OUT"
trap 'rm -rf "$OUT"' EXIT
BENCH_LOG="$WORK/run-files.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time fls:sleuthkit tsk_recover:sleuthkit mke2fs:e2fsprogs \
  debugfs:e2fsprogs sgdisk:gdisk

if [[ -z "${VMDK_FILES:-}" || -z "${VMDK_INSPECT:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-files, vmdk-inspect"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-files >&2 && swift build "${SWIFT_RELEASE[@]}" --product vmdk-inspect >&2)
  bin="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)"
  VMDK_FILES="$bin/vmdk-files"
  VMDK_INSPECT="$bin/vmdk-inspect"
fi
[[ -x "$VMDK_FILES" && -x "$VMDK_INSPECT" ]] || die "$VMDK_FILES or $VMDK_INSPECT is not executable"

# The partition starts at sector 2048 (1 MiB) on both disks.
part_offset=1048576
raw="$WORK/ext4.img"
vmdk="$WORK/ext4.vmdk"
if [[ ! -f "$vmdk" ]]; then
  log "making a 1 GiB GPT disk with an ext4 of $SRC"
  rm -f "$WORK/fs.img" "$raw"
  truncate -s 1022M "$WORK/fs.img"
  mke2fs -q -F -t ext4 -L bench -d "$SRC" "$WORK/fs.img" 2>>"$BENCH_LOG"
  truncate -s 1G "$raw"
  sgdisk -o -n 1:2048:+1022M -t 1:8300 "$raw" >/dev/null
  dd if="$WORK/fs.img" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$WORK/fs.img"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$raw" "$vmdk"
fi
big="$WORK/big.vmdk"
if [[ ! -f "$big" ]]; then
  log "making a 2 TiB sparse GPT disk with an ext4"
  rm -f "$WORK/big.img"
  mkdir -p "$WORK/big-src/etc/nginx"
  for i in $(seq 1 200); do echo "file $i" >"$WORK/big-src/etc/f$i.conf"; done
  echo "worker_processes 4;" >"$WORK/big-src/etc/nginx/nginx.conf"
  truncate -s $((2 << 40)) "$WORK/big.img"
  sgdisk -o -n 1:2048:0 -t 1:8300 "$WORK/big.img" >/dev/null
  # Written in place at the partition's offset (copying a 2 TiB sparse file would read 2 TiB).
  mke2fs -q -F -t ext4 -E offset=$part_offset,lazy_itable_init=1,nodiscard -d "$WORK/big-src" "$WORK/big.img" \
    $((((2 << 40) - (2 << 20)) / 4096)) 2>>"$BENCH_LOG"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$WORK/big.img" "$big"
  rm -f "$WORK/big.img"
fi

# Same names as fls (which prints "r/r 12:\tpath", with deleted entries and $OrphanFiles).
ours_n="$("$VMDK_FILES" ls -R "$vmdk" | wc -l)"
theirs_n="$(fls -r -p -o 2048 "$raw" | grep -v -e '\$OrphanFiles' -e '^[^	]*\*' | wc -l)"
[[ "$ours_n" == "$theirs_n" ]] || die "ls -R lists $ours_n names, fls $theirs_n"
log "ok: $ours_n names"

N="nice -n 5"
JOBS="${JOBS:-ls extract cat big}"
if [[ $JOBS == *ls* ]]; then
ours=($N "$VMDK_FILES" ls -R "$vmdk")
theirs=($N fls -r -p -i vmdk -o 2048 "$vmdk")
bench_pair "ls -R / fls -r -p, same VMDK ($ours_n names)" "" ours theirs
theirs=($N fls -r -p -o 2048 "$raw")
bench_pair "ls -R (VMDK) / fls -r -p (raw)" "" ours theirs
fi

# Extraction: ours against debugfs once, for content, before timing.
clean_out() { rm -rf "$OUT/out-ours" "$OUT/out-theirs"; mkdir -p "$OUT/out-theirs"; }
clean_out
"$VMDK_FILES" extract --quiet "$vmdk" / --to "$OUT/out-ours" 2>>"$BENCH_LOG"
debugfs -R "rdump / $OUT/out-theirs" "$raw?offset=$part_offset" 2>>"$BENCH_LOG"
digest_tree() { (cd "$1" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 md5sum | md5sum); }
[[ "$(digest_tree "$OUT/out-ours")" == "$(digest_tree "$OUT/out-theirs")" ]] || die "extract and debugfs rdump differ"
# Type, mode, size, owner and mtime (seconds: rdump sets times with utime) of every name, and
# symbolic links' targets (rdump leaves their times alone).
manifest_tree() {
  (cd "$1" && find . -path ./lost+found -prune -o ! -name . -printf '%T@ %y %m %s %U %G %P -> %l\n' |
    awk '{ if ($2 == "l") $1 = "-"; else sub(/\..*/, "", $1); print }' | sort)
}
cmp -s <(manifest_tree "$OUT/out-ours") <(manifest_tree "$OUT/out-theirs") ||
  die "extract and debugfs rdump differ in types, modes, sizes, owners, times or link targets"
files_n="$(find "$OUT/out-ours" -type f | wc -l)"
log "ok: extract gives debugfs's $files_n files, same md5, modes, owners, times and link targets"
# The largest file (for the cat job), and its md5.
largest="$(find "$OUT/out-ours" -type f -printf '%s %P\n' | sort -n | tail -1)"
size="${largest%% *}"
path="/${largest#* }"
md5="$(md5sum <"$OUT/out-ours$path")"
if [[ $JOBS == *extract* ]]; then
ours=($N "$VMDK_FILES" extract --quiet "$vmdk" / --to "$OUT/out-ours")
theirs=($N debugfs -R "rdump / $OUT/out-theirs" "$raw?offset=$part_offset")
bench_pair "extract / (VMDK) / debugfs rdump (raw)" clean_out ours theirs
theirs=($N tsk_recover -a -i vmdk -o 2048 "$vmdk" "$OUT/out-theirs")
bench_pair "extract / (VMDK) / tsk_recover -a (VMDK)" clean_out ours theirs
# The same on one thread (no writer threads), against debugfs.
ours=($N "$VMDK_FILES" extract --quiet --threads 0 "$vmdk" / --to "$OUT/out-ours")
theirs=($N debugfs -R "rdump / $OUT/out-theirs" "$raw?offset=$part_offset")
bench_pair "extract --threads 0 / (VMDK) / debugfs rdump (raw)" clean_out ours theirs
fi

# The largest file's first block on the disk (debugfs `bmap FILE 0`).

block="$(debugfs -R "bmap \"$path\" 0" "$raw?offset=$part_offset" 2>/dev/null | tail -1)"
bs="$(dumpe2fs -h "$raw?offset=$part_offset" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /, "", $2); print $2}')"
[[ -n "$block" && -n "$bs" ]] || die "no block map for $path"
[[ "$("$VMDK_FILES" cat "$vmdk" "$path" | md5sum)" == "$md5" ]] || die "cat $path differs"
if [[ $JOBS == *cat* ]]; then
ours=($N "$VMDK_FILES" cat "$vmdk" "$path")
theirs=($N "$VMDK_INSPECT" cat "$vmdk" --offset $((part_offset + block * bs)) --length "$size")
bench_pair "cat $path ($size bytes) / vmdk-inspect cat of as many bytes" "" ours theirs
fi

# One folder on the 2 TiB disk.
if [[ $JOBS == *big* ]]; then
inode="$(fls -i vmdk -o 2048 "$big" | awk '$NF == "etc" {sub(":", "", $2); print $2}')"
[[ -n "$inode" ]] || die "no /etc on $big"
ours=($N "$VMDK_FILES" ls "$big" /etc)
theirs=($N fls -i vmdk -o 2048 "$big" "$inode")
bench_pair "ls /etc (201 names) on a 2 TiB disk / fls of the same folder" "" ours theirs
fi

results="$WORK/results-files.md"
{
  echo "## File-level restore benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- ext4 (\`mke2fs -d $SRC\`) in a 1 GiB GPT disk, monolithicSparse; $ours_n names, $files_n files"
  echo "- 'qemu-img' columns: the peer named in each job. Medians of $BENCH_ROUNDS alternating rounds after one"
  echo "  warm-up run each (warm page cache), every run under nice -n 5"
  echo
  bench_table
} | tee "$results"

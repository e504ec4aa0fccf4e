#!/usr/bin/env bash
# make-ntfs.sh OUT.raw — a 4 GiB GPT disk holding one NTFS, for run-ntfs.sh and run-mount.sh.
#
# The NTFS is made by `mkntfs -Q` on a raw partition image (OUT.part, kept beside OUT.raw:
# ntfsls, ntfscat and ntfs-3g read a volume, not a disk), filled through an ntfs-3g FUSE
# mount with every regular file of /usr/share and then the first files of /usr/lib in
# byte-wise sorted path order until DATA_BYTES is reached (symbolic links are left out), then
# written into partition 1 of OUT.raw (GPT, 1 MiB to the end) with `dd conv=sparse`.
# The summary goes to OUT.raw.info (key=value lines, sourceable).
#
# Environment:
#   DISK_SIZE    disk size in bytes (default 4294967296 = 4 GiB)
#   DATA_BYTES   how much file data to put in (default 1600000000, about 1.6 GB)
#   DATA_FIRST   folder taken whole (default /usr/share)
#   DATA_REST    folder whose sorted prefix fills up to DATA_BYTES (default /usr/lib)
#
# Needs root (the FUSE mount), ntfs-3g, gdisk; about 2 x DATA_BYTES free beside OUT.raw.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

[[ $# -eq 1 ]] || { echo "usage: $0 OUT.raw" >&2; exit 2; }
DISK_SIZE="${DISK_SIZE:-4294967296}"
DATA_BYTES="${DATA_BYTES:-1600000000}"
DATA_FIRST="${DATA_FIRST:-/usr/share}"
DATA_REST="${DATA_REST:-/usr/lib}"
ensure_commands mkntfs:ntfs-3g ntfs-3g:ntfs-3g sgdisk:gdisk
outdir="$(cd "$(dirname "$1")" && pwd)"
out="$outdir/$(basename "$1")"
part="${out%.raw}.part"

scratch="$(mktemp -d "$outdir/.make-ntfs.XXXXXX")"
mnt="$scratch/mnt"
mkdir "$mnt"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$scratch"
}
trap cleanup EXIT

log "creating $out ($DISK_SIZE bytes, GPT)"
rm -f "$out" "$part"
truncate -s "$DISK_SIZE" "$out"
sgdisk -o -U 6e2b1c53-4d88-4f1f-8b63-7a4c2d3e5f60 \
  -n 1:2048:0 -t 1:0700 -c 1:bench-ntfs -u 1:9d5f3f2b-8c4e-4b7d-8f26-3a8e1bac4d72 "$out" >/dev/null
first="$(sgdisk -i 1 "$out" | awk '/^First sector:/ {print $3}')"
last="$(sgdisk -i 1 "$out" | awk '/^Last sector:/ {print $3}')"
sectors=$((last - first + 1))
truncate -s $((sectors * 512)) "$part"
log "mkntfs -Q ($((sectors * 512)) bytes, partition at sector $first)"
mkntfs -Q -F -q -L bench-ntfs -p "$first" "$part" $sectors

# The file list: DATA_FIRST whole, then DATA_REST's sorted prefix up to DATA_BYTES.
list="$scratch/files"
{
  (cd / && find "${DATA_FIRST#/}" -xdev -type f -readable -printf '%p\t%s\n' | LC_ALL=C sort -t$'\t' -k1,1)
  (cd / && find "${DATA_REST#/}" -xdev -type f -readable -printf '%p\t%s\n' | LC_ALL=C sort -t$'\t' -k1,1)
} | awk -F'\t' -v want="$DATA_BYTES" 'NF == 2 && sum < want { sum += $2; print $1 }' >"$list"
log "filling through ntfs-3g: $(wc -l <"$list") files"
ntfs-3g -o big_writes "$part" "$mnt"
(cd / && tr '\n' '\0' <"$list" | tar --null --no-recursion -T - -cf -) | tar -C "$mnt" -xf -
data_files="$(find "$mnt" -type f | wc -l)"
data_bytes="$(du -sb --apparent-size "$mnt" | awk '{print $1}')"
names="$(find "$mnt" -mindepth 1 | wc -l)"
umount "$mnt"

log "dd into the partition at sector $first"
dd if="$part" of="$out" bs=4M seek=$((first * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
{
  printf '%s=%q\n' disk "$out"
  printf '%s=%q\n' partition_image "$part"
  printf '%s=%q\n' partition_offset $((first * 512))
  printf '%s=%q\n' partition_sector "$first"
  printf '%s=%q\n' data_selection "$DATA_FIRST and a sorted prefix of $DATA_REST"
  printf '%s=%q\n' data_files "$data_files"
  printf '%s=%q\n' data_bytes "$data_bytes"
  printf '%s=%q\n' names "$names"
} >"$out.info"
cat "$out.info"

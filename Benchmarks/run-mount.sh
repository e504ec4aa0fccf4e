#!/usr/bin/env bash
# run-mount.sh — read throughput through `vmdk-mount` (issue 14: at least 80% of `vmdk-files cat`),
# on the NTFS disk of run-ntfs.sh (made by make-ntfs.sh, kept in its work dir) and the ext4 disk
# of run-files.sh (`mke2fs -d /usr/share` in a 1 GiB GPT disk, kept in its work dir):
#   file  `cat MNT/FILE > /dev/null` of the largest file / `vmdk-files cat IMAGE FILE`
#   tree  `tar cf - . | cat > /dev/null` in the mount / `vmdk-files extract /` into a tmpfs
#   small `dd bs=4k` of the largest file (a small-read reader) / `vmdk-files cat IMAGE FILE`
# The mount caches pages in the kernel (kernel_cache, keep_cache), so every run gets a fresh
# mount, made before the clock starts and unmounted after it stops: each run reads through our
# reader, not the page cache of an earlier run. Before timing: the file's md5 through the mount
# equals `vmdk-files cat`'s, and the tree through the mount (`find -type f` + md5sum) equals the
# extracted one.
#
# Every run under `nice -n 5`, one warm-up per side, BENCH_ROUNDS (default 3) alternating rounds,
# medians. Throughput = bytes / median time.
#
# Environment:
#   NTFS_DIR      run-ntfs.sh's work dir (default /tmp/vmdk-bench-ntfs; the disk is made when missing)
#   EXT4_DIR      run-files.sh's work dir (default /tmp/vmdk-bench-files; likewise)
#   VMDK_BENCH_DIR  this script's work dir (default /tmp/vmdk-bench-mount: log, results)
#   BENCH_ROUNDS  timed rounds per job (default 3)
#   VMDK_FILES, VMDK_MOUNT  use these binaries instead of building them (release)
#   JOBS          which jobs to run (default "ntfs-file ntfs-tree ext4-file ext4-tree"; also
#                 ntfs-small, ext4-small)
#   OUT           where extract writes (default /dev/shm/vmdk-bench-mount-out, a tmpfs)
#   MOUNT_OPTS    extra `vmdk-mount -o` options (default none)
#   MOUNT_FLAGS   extra vmdk-mount flags, space-separated (--direct-io, --no-direct-io…; default none)
#   MODES         "mt" (libfuse's multithreaded loop, the default of vmdk-mount) and/or "st"
#                 (`vmdk-mount -s`, one thread); default "mt st"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-mount}"
NTFS_DIR="${NTFS_DIR:-/tmp/vmdk-bench-ntfs}"
EXT4_DIR="${EXT4_DIR:-/tmp/vmdk-bench-files}"
mkdir -p "$WORK" "$NTFS_DIR" "$EXT4_DIR"
WORK="$(cd "$WORK" && pwd)"
OUT="${OUT:-/dev/shm/vmdk-bench-mount-out}"
MNT="$WORK/mnt"
mkdir -p "$OUT" "$MNT"
trap 'mountpoint -q "$MNT" && fusermount3 -u "$MNT"; rm -rf "$OUT"' EXIT
BENCH_LOG="$WORK/run-mount.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time fusermount3:fuse3 mke2fs:e2fsprogs sgdisk:gdisk \
  ntfs-3g:ntfs-3g

if [[ -z "${VMDK_FILES:-}" || -z "${VMDK_MOUNT:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-files, vmdk-mount"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-files >&2 && swift build "${SWIFT_RELEASE[@]}" --product vmdk-mount >&2)
  bin="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)"
  VMDK_FILES="$bin/vmdk-files"
  VMDK_MOUNT="$bin/vmdk-mount"
fi
[[ -x "$VMDK_FILES" && -x "$VMDK_MOUNT" ]] || die "$VMDK_FILES or $VMDK_MOUNT is not executable"

ntfs="$NTFS_DIR/ntfs.vmdk"
if [[ ! -f "$ntfs" ]]; then
  bash "$here/make-ntfs.sh" "$NTFS_DIR/ntfs.raw" >&2
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$NTFS_DIR/ntfs.raw" "$ntfs"
fi
ext4="$EXT4_DIR/ext4.vmdk"
if [[ ! -f "$ext4" ]]; then
  log "making a 1 GiB GPT disk with an ext4 of /usr/share (as run-files.sh does)"
  truncate -s 1022M "$EXT4_DIR/fs.img"
  mke2fs -q -F -t ext4 -L bench -d /usr/share "$EXT4_DIR/fs.img" 2>>"$BENCH_LOG"
  truncate -s 1G "$EXT4_DIR/ext4.img"
  sgdisk -o -n 1:2048:+1022M -t 1:8300 "$EXT4_DIR/ext4.img" >/dev/null
  dd if="$EXT4_DIR/fs.img" of="$EXT4_DIR/ext4.img" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$EXT4_DIR/fs.img"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$EXT4_DIR/ext4.img" "$ext4"
fi

N="nice -n 5"
mount_opts=()
[[ -n "${MOUNT_OPTS:-}" ]] && mount_opts=(-o "$MOUNT_OPTS")
read -r -a mount_flags <<<"${MOUNT_FLAGS:-}"
IMAGE=""
unmount() { if mountpoint -q "$MNT"; then fusermount3 -u "$MNT"; fi; }
MODE=mt
fresh_mount() {
  unmount
  rm -rf "$OUT/tree"
  local single=()
  [[ $MODE == st ]] && single=(-s)
  $N "$VMDK_MOUNT" "${single[@]}" "${mount_flags[@]}" "${mount_opts[@]}" "$IMAGE" "$MNT"
  mountpoint -q "$MNT" || die "vmdk-mount $IMAGE did not mount"
}

ROWS=()
# job LABEL IMAGE: both jobs on one image.
run_image() {
  local fs="$1"
  IMAGE="$2"
  fresh_mount
  local largest size path md5 files bytes
  largest="$(find "$MNT" -type f -printf '%s %P\n' | sort -n | tail -1)"
  size="${largest%% *}"
  path="/${largest#* }"
  read -r files bytes < <(find "$MNT" -type f -printf '%s\n' | awk '{n++; s += $1} END {print n, s}')
  md5="$(md5sum <"$MNT$path")"
  [[ "$("$VMDK_FILES" cat "$IMAGE" "$path" | md5sum)" == "$md5" ]] || die "$fs: $path differs through the mount"
  rm -rf "$OUT/tree"
  "$VMDK_FILES" extract --quiet "$IMAGE" / --to "$OUT/tree" 2>>"$BENCH_LOG"
  local a b
  a="$(cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum)"
  b="$(cd "$OUT/tree" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum)"
  [[ "$a" == "$b" ]] || die "$fs: the tree through the mount differs from vmdk-files extract"
  log "ok: $fs: $files files, $bytes bytes, the same md5 through the mount; largest $path ($size bytes)"
  unmount
  local label
  for MODE in $MODES; do
    label="mount"
    [[ $MODE == st ]] && label="mount -s"
    if [[ $JOBS == *$fs-file* ]]; then
      local ours=($N bash -c "cat '$MNT$path' >/dev/null")
      local theirs=($N "$VMDK_FILES" cat "$IMAGE" "$path")
      BENCH_ROWS=()
      bench_pair "$fs: cat of $path ($size bytes), $label / vmdk-files cat" fresh_mount ours theirs
      ROWS+=("$(row "${BENCH_ROWS[0]}" "$size")")
    fi
    if [[ $JOBS == *$fs-small* ]]; then
      local ours=($N dd if="$MNT$path" of=/dev/null bs=4k status=none)
      local theirs=($N "$VMDK_FILES" cat "$IMAGE" "$path")
      BENCH_ROWS=()
      bench_pair "$fs: dd bs=4k of $path ($size bytes), $label / vmdk-files cat" fresh_mount ours theirs
      ROWS+=("$(row "${BENCH_ROWS[0]}" "$size")")
    fi
    if [[ $JOBS == *$fs-tree* ]]; then
      local ours=($N bash -c "cd '$MNT' && tar cf - . | cat >/dev/null")
      local theirs=($N "$VMDK_FILES" extract --quiet "$IMAGE" / --to "$OUT/tree")
      BENCH_ROWS=()
      bench_pair "$fs: tar cf - . ($files files), $label / vmdk-files extract / (tmpfs)" fresh_mount ours theirs
      ROWS+=("$(row "${BENCH_ROWS[0]}" "$bytes")")
    fi
  done
  MODE=mt
  unmount
  rm -rf "$OUT/tree"
}

# A bench_table row plus throughputs: "| name | mount s | files s | ratio | rss | rss |".
row() {
  awk -F'|' -v bytes="$2" '{
    m = $3 + 0; f = $4 + 0
    printf "| %s | %.3f | %.3f | %.0f | %.0f | **%.0f%%** | %s | %s |\n", $2, m, f, bytes / m / 1048576,
      bytes / f / 1048576, 100 * f / m, $6, $7 }' <<<"$1"
}

JOBS="${JOBS:-ntfs-file ntfs-tree ext4-file ext4-tree}"
MODES="${MODES:-mt st}"
[[ $JOBS == *ntfs* ]] && run_image ntfs "$ntfs"
[[ $JOBS == *ext4* ]] && run_image ext4 "$ext4"

results="$WORK/results-mount.md"
{
  echo "## Mount benchmarks ($(date -u '+%Y-%m-%d %H:%M') UTC)"
  echo
  bash "$here/machine.sh"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- vmdk-mount flags: ${MOUNT_FLAGS:-none}; commit $(cd "$root" && git rev-parse --short HEAD)"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each, a fresh mount before every run,"
  echo "  every run under nice -n 5; throughput in MiB/s of file data"
  echo
  echo "| job | mount (s) | vmdk-files (s) | mount MiB/s | vmdk-files MiB/s | mount / vmdk-files | cat or tar peak RSS MiB | vmdk-files peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$results"

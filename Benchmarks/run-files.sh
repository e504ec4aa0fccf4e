#!/usr/bin/env bash
# run-files.sh — file-level restore: `vmdk-files ls -R` against sleuthkit's `fls -r -p`
# (which reads VMDK itself through libvmdk, `-i vmdk`) on the same monolithicSparse disk,
# and on the raw file; `vmdk-files extract /` against `mcopy -s` (mtools) on the raw file.
#
# Image (made here at run time, in the work dir, kept and reused): a GPT disk with one
# FAT32 partition at sector 2048 holding a copy of SRC (default /usr/share/doc), filled by
# `mcopy -s`, converted with qemu-img to monolithicSparse. ext4 joins when the ext reader
# is merged (the coordinator adds the job).
#
# Before timing, our listing is checked against fls's: the same number of names.
#
# Measured here (2026-12-07, 2 shared cores, other jobs running, 5 rounds): on 5,230 names,
# ls -R 0.032 s vs fls -i vmdk 0.218 s (0.15x), vs fls on the raw 0.222 s; extract 3.77 s vs
# mcopy -s 3.68 s (1.02x; noisy: both are bound by creating the files); peak RSS 24-26 MiB.
#
# Environment:
#   VMDK_BENCH_DIR  work dir (default /tmp/vmdk-bench-files)
#   BENCH_ROUNDS    timed rounds per job (default 5)
#   SRC             the tree copied into the file system (default /usr/share/doc)
#   SIZE_MIB        the FAT32 volume's size (default 512)
#   VMDK_FILES      use this binary instead of building .build/release/vmdk-files
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-files}"
SRC="${SRC:-/usr/share/doc}"
SIZE_MIB="${SIZE_MIB:-512}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-files.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time fls:sleuthkit mkfs.fat:dosfstools mcopy:mtools sgdisk:gdisk

if [[ -z "${VMDK_FILES:-}" ]]; then
  log "building: swift build -c release --product vmdk-files"
  (cd "$root" && swift build -c release --product vmdk-files >&2)
  VMDK_FILES="$(cd "$root" && swift build -c release --show-bin-path)/vmdk-files"
fi
[[ -x "$VMDK_FILES" ]] || die "$VMDK_FILES is not executable"

raw="$WORK/fat32.img"
vmdk="$WORK/fat32.vmdk"
if [[ ! -f "$vmdk" ]]; then
  log "making a ${SIZE_MIB} MiB FAT32 of $SRC"
  export MTOOLS_SKIP_CHECK=1
  rm -f "$WORK/fs.img" "$raw"
  mkfs.fat -C -F 32 -n BENCH "$WORK/fs.img" $((SIZE_MIB * 1024)) >/dev/null
  mcopy -s -Q -i "$WORK/fs.img" "$SRC" ::/ 2>>"$BENCH_LOG" || log "mcopy skipped some names (see the log)"
  truncate -s $(((SIZE_MIB + 4) * 1024 * 1024)) "$raw"
  sgdisk -o -n 1:2048:+${SIZE_MIB}M -t 1:0700 "$raw" >/dev/null
  dd if="$WORK/fs.img" of="$raw" bs=1M seek=1 conv=notrunc status=none
  rm -f "$WORK/fs.img"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$raw" "$vmdk"
fi

ours_n="$("$VMDK_FILES" ls -R "$vmdk" | wc -l)"
theirs_n="$(fls -r -p -o 2048 "$raw" | grep -v -e '\$' -e 'Volume Label' | wc -l)"
[[ "$ours_n" == "$theirs_n" ]] || die "ls -R lists $ours_n names, fls $theirs_n"
log "ok: $ours_n names"

clean_out() { rm -rf "$WORK/out-ours" "$WORK/out-mcopy"; mkdir -p "$WORK/out-mcopy"; }

ours=("$VMDK_FILES" ls -R "$vmdk")
theirs=(fls -r -p -i vmdk -o 2048 "$vmdk")
bench_pair "ls -R / fls -r -p, VMDK ($ours_n names)" "" ours theirs
theirs=(fls -r -p -o 2048 "$raw")
bench_pair "ls -R (VMDK) / fls -r -p (raw)" "" ours theirs
export MTOOLS_SKIP_CHECK=1
ours=("$VMDK_FILES" extract --quiet "$vmdk" / --to "$WORK/out-ours")
theirs=(mcopy -s -n -i "$raw@@1M" "::*" "$WORK/out-mcopy/")
bench_pair "extract / (VMDK) / mcopy -s (raw)" clean_out ours theirs

results="$WORK/results-files.md"
{
  echo "## File-level restore benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- FAT32 of $SRC in a ${SIZE_MIB} MiB GPT partition, $ours_n names; the 'qemu-img' columns are the peer named in each job"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache)"
  echo
  bench_table
} | tee "$results"

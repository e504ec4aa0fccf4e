#!/usr/bin/env bash
# run-vix.sh — the open VixDiskLib's read throughput against vmdk-inspect cat, side by side.
#
# Jobs, on the 4 GiB GPT + ext4 monolithicSparse disk of run-read.sh (make-disk.sh, about
# 1.6 GB of data), read whole, every byte:
#   sync   `vix-read sync disk.vmdk 1048576`: VixDiskLib_Read in 1 MiB requests
#   async  `vix-read async disk.vmdk 1048576 16`: VixDiskLib_ReadAsync, 16 requests in flight
# each against `vmdk-inspect cat disk.vmdk > /dev/null`, the toolkit's own fastest reader.
# Target (issue 11): at least 90% of cat's throughput (ratio ours/cat at most 1.11), peak RSS
# under 64 MiB. vix-read.c uses only VixDiskLib calls (it builds against VMware's header too).
#
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench; the disk is shared with run-read.sh),
# BENCH_ROUNDS (default 5), VMDK_INSPECT (skip building it).
# shellcheck disable=SC2034
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-vix.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time cc:gcc patchelf:patchelf
bench_build_tool "$root"

prefix="$WORK/vix"
log "building and installing the library: Tools/install.sh $prefix"
bash "$root/Tools/install.sh" "$prefix" >&2
cc -O2 -I "$prefix/include" "$here/vix-read.c" -o "$WORK/vix-read" -L "$prefix/lib64" -lvixDiskLib \
  -Wl,-rpath,"$prefix/lib64" -lpthread

disk_raw="$WORK/disk.raw"
disk_vmdk="$WORK/disk.vmdk"
if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  log "no $disk_raw yet: building it"
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi
if [[ ! -f "$disk_vmdk" || "$disk_raw" -nt "$disk_vmdk" ]]; then
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$disk_raw" "$disk_vmdk.tmp"
  mv "$disk_vmdk.tmp" "$disk_vmdk"
fi

# Correctness first: both modes give the same checksum, and the bytes they read are the disk's.
sync_sum="$("$WORK/vix-read" sync "$disk_vmdk" 1048576 2>/dev/null)"
async_sum="$("$WORK/vix-read" async "$disk_vmdk" 1048576 16 2>/dev/null)"
[[ "$sync_sum" == "$async_sum" ]] || die "Read says '$sync_sum', ReadAsync says '$async_sum'"
log "ok: Read and ReadAsync agree: $sync_sum"

cat_cmd=("$VMDK_INSPECT" cat "$disk_vmdk")
ours=("$WORK/vix-read" sync "$disk_vmdk" 1048576)
bench_pair "VixDiskLib_Read 1 MiB vs cat" "" ours cat_cmd
ours=("$WORK/vix-read" async "$disk_vmdk" 1048576 16)
bench_pair "VixDiskLib_ReadAsync 1 MiB x 16 vs cat" "" ours cat_cmd

results="$WORK/results-vix.md"
{
  echo "## VixDiskLib read benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- disk.vmdk: $(stat -c %s "$disk_vmdk") bytes, 4 GiB monolithicSparse (make-disk.sh)"
  echo "- Medians of ${BENCH_ROUNDS:-5} alternating rounds after one warm-up run each (warm page cache)"
  echo
  bench_table | sed 's/qemu-img (s)/vmdk-inspect cat (s)/; s/ratio ours\/qemu/ratio ours\/cat/; s/qemu peak RSS/cat peak RSS/'
} | tee "$results"
log "table saved to $results"

#!/usr/bin/env bash
# run-vix.sh — the open VixDiskLib's read throughput against vmdk-inspect cat, side by side.
#
# Jobs, on the 4 GiB GPT + ext4 monolithicSparse disk of run-read.sh (make-disk.sh, about
# 1.6 GB of data), every byte of the disk (holes included) written into a pipe to the same
# sink, `| cat > /dev/null`, so that nobody can skip the holes:
#   sync   `vix-read sync disk.vmdk 1048576`: VixDiskLib_Read in 1 MiB requests
#   async  `vix-read async disk.vmdk 1048576 16`: VixDiskLib_ReadAsync, 16 requests in flight
# each against `vmdk-inspect cat disk.vmdk`, the toolkit's own fastest reader, alternating.
# Target (issue 11): at least 90% of cat's throughput (ratio ours/cat at most 1.11), peak RSS
# under 64 MiB. vix-read.c uses only VixDiskLib calls (it builds against VMware's header too).
# First both modes are checked: their bytes' SHA-256 equals `vmdk-inspect digest`.
#
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench; the disk is shared with run-read.sh),
# BENCH_ROUNDS (default 3), VMDK_INSPECT (skip building it), VIX_PREFIX (an installed library:
# skip Tools/install.sh). Run it niced on a shared machine: `nice -n 5 bash Benchmarks/run-vix.sh`.
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

prefix="${VIX_PREFIX:-$WORK/vix}"
if [[ -z "${VIX_PREFIX:-}" ]]; then
  log "building and installing the library: Tools/install.sh $prefix"
  bash "$root/Tools/install.sh" "$prefix" >&2
fi
cc -O2 -Wall -I "$prefix/include" "$here/vix-read.c" -o "$WORK/vix-read" -L "$prefix/lib64" -lvixDiskLib \
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
capacity="$(stat -c %s "$disk_raw")"

# Correctness first: every byte of both modes, hashed, equals vmdk-inspect's digest.
want="$("$VMDK_INSPECT" digest "$disk_vmdk" | cut -d' ' -f1)"
for mode in sync async; do
  got="$("$WORK/vix-read" "$mode" "$disk_vmdk" 1048576 16 | sha256sum | cut -d' ' -f1)"
  [[ "$got" == "$want" ]] || die "vix-read $mode: sha256 $got, vmdk-inspect digest $want"
done
log "ok: Read and ReadAsync give vmdk-inspect's digest $want"

# Each side writes into a pipe to cat; /usr/bin/time's peak RSS is the largest process of the
# pipeline (the reader: cat and bash are about 2-4 MiB).
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
piped() { printf '"$@" | cat > /dev/null'; }
cat_cmd=(bash -c "$(piped)" bash "$VMDK_INSPECT" cat "$disk_vmdk")
ours=(bash -c "$(piped)" bash "$WORK/vix-read" sync "$disk_vmdk" 1048576)
bench_pair "VixDiskLib_Read 1 MiB vs cat, into a pipe" "" ours cat_cmd
ours=(bash -c "$(piped)" bash "$WORK/vix-read" async "$disk_vmdk" 1048576 16)
bench_pair "VixDiskLib_ReadAsync 1 MiB x 16 vs cat, into a pipe" "" ours cat_cmd

# Peak RSS of each reader alone (`/usr/bin/time -v`, "Maximum resident set size").
rss() {
  local f="$WORK/rss.$$"
  "$BENCH_TIME" -v "$@" 2>"$f" | cat >/dev/null
  awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$f"
  rm -f "$f"
}
rss_sync="$(rss "$WORK/vix-read" sync "$disk_vmdk" 1048576)"
rss_async="$(rss "$WORK/vix-read" async "$disk_vmdk" 1048576 16)"
rss_cat="$(rss "$VMDK_INSPECT" cat "$disk_vmdk")"

results="$WORK/results-vix.md"
{
  echo "## VixDiskLib read benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- disk.vmdk: $(stat -c %s "$disk_vmdk") bytes, $capacity bytes virtual, monolithicSparse (make-disk.sh)"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache), every byte into \`| cat > /dev/null\`"
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  bench_table | sed 's/qemu-img (s)/vmdk-inspect cat (s)/; s/ratio ours\/qemu/ratio ours\/cat/; s/our peak RSS/pipeline peak RSS/; s/qemu peak RSS/cat pipeline peak RSS/'
  echo
  echo "Throughput (GiB/s, from the medians) and peak RSS of the readers alone (time -v):"
  echo
  for row in "${BENCH_ROWS[@]}"; do
    awk -F'|' -v c="$capacity" '{ printf "- %s: ours %.2f GiB/s, cat %.2f GiB/s, ours/cat throughput %.0f%%\n", $2, c/$3/2^30, c/$4/2^30, 100*$4/$3 }' <<<"$row"
  done
  echo "- peak RSS: vix-read sync ${rss_sync} MiB, vix-read async ${rss_async} MiB, vmdk-inspect cat ${rss_cat} MiB"
} | tee "$results"
log "table saved to $results"

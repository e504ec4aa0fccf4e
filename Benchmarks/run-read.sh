#!/usr/bin/env bash
# run-read.sh — read-side benchmarks: vmdk-inspect against qemu-img, side by side.
#
# Jobs (all on images made here at run time, in the work dir):
#   info    `vmdk-inspect info big.vmdk`  vs `qemu-img info big.vmdk`
#           big.vmdk: 60 TiB monolithicSparse from `qemu-img create -f vmdk`, with a
#           little data written by qemu-io at a few offsets.
#   cat     `vmdk-inspect cat disk.vmdk > /dev/null` vs `qemu-img convert -O raw disk.vmdk out.raw`
#   digest  `vmdk-inspect digest disk.vmdk --algorithm sha256`
#           vs `qemu-img convert -O raw disk.vmdk out.raw && sha256sum out.raw`
#           disk.vmdk: monolithicSparse converted by qemu-img from the 4 GiB GPT + ext4
#           raw disk that make-disk.sh builds.
#
# Every job gets one warm-up run per side (the page cache cannot be dropped without
# privileges we do not assume, so instead both sides read from a warm cache), then
# BENCH_ROUNDS rounds (default 5) alternating which side runs first. The table shows
# medians of wall time and of peak RSS (GNU time %M).
#
# Environment:
#   VMDK_BENCH_DIR  work dir (default /tmp/vmdk-bench); the disk is kept there and reused
#   BENCH_ROUNDS    timed rounds per job (default 5)
#   JOBS            which jobs to run (default "info cat digest")
#   VMDK_INSPECT    use this binary instead of building .build/release/vmdk-inspect
#   QEMU_OUT_DIR    where qemu-img writes its raw output (default: the work dir; a
#                   tmpfs such as /dev/shm takes the disk writes out of qemu's time)
#   CHECK           1 (default): before timing, check that our digest and our cat
#                   output match qemu-img's decoding; 0 to skip
# The ours/qemu arrays are read by bench_pair through namerefs; single quotes in
# the qemu digest command are meant for the inner bash.
# shellcheck disable=SC2034,SC2016
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
JOBS="${JOBS:-info cat digest}"
CHECK="${CHECK:-1}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
QEMU_OUT_DIR="${QEMU_OUT_DIR:-$WORK}"
mkdir -p "$QEMU_OUT_DIR"
BENCH_LOG="$WORK/run-read.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils qemu-io:qemu-utils /usr/bin/time:time sha256sum:coreutils
bench_build_tool "$root"

disk_raw="$WORK/disk.raw"
disk_vmdk="$WORK/disk.vmdk"
big_vmdk="$WORK/big.vmdk"
qraw="$QEMU_OUT_DIR/qemu-out.raw"

# ---- Images -------------------------------------------------------------------
if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  log "no $disk_raw yet: building it"
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi
if [[ ! -f "$disk_vmdk" || "$disk_raw" -nt "$disk_vmdk" ]]; then
  log "qemu-img convert -O vmdk -o subformat=monolithicSparse disk.raw disk.vmdk"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$disk_raw" "$disk_vmdk.tmp"
  mv "$disk_vmdk.tmp" "$disk_vmdk"
fi
if [[ ! -f "$big_vmdk" ]]; then
  log "qemu-img create -f vmdk big.vmdk 60T, plus a little data"
  qemu-img create -q -f vmdk "$big_vmdk.tmp" 60T
  T=$((1 << 40))
  qemu-io -f vmdk \
    -c "write -q -P 0xa5 0 1M" \
    -c "write -q -P 0x5a $((1 << 30)) 64k" \
    -c "write -q -P 0xc3 $((7 * T + 12345 * 512)) 300k" \
    -c "write -q -P 0x3c $((33 * T)) 1M" \
    -c "write -q -P 0xff $((60 * T - 65536)) 64k" \
    "$big_vmdk.tmp" >/dev/null
  mv "$big_vmdk.tmp" "$big_vmdk"
fi

# ---- Correctness first: a fast wrong answer is not a result ---------------------
if [[ "$CHECK" == 1 ]] && grep -qwE 'cat|digest' <<<"$JOBS"; then
  log "checking our decoding of disk.vmdk against qemu-img"
  qemu-img convert -O raw "$disk_vmdk" "$qraw"
  want="$(sha256sum "$qraw" | cut -d' ' -f1)"
  rm -f "$qraw"
  got_digest="$("$VMDK_INSPECT" digest "$disk_vmdk" --algorithm sha256 | awk 'NR==1 {print $1}')"
  got_cat="$("$VMDK_INSPECT" cat "$disk_vmdk" | sha256sum | cut -d' ' -f1)"
  [[ "$got_digest" == "$want" ]] || die "vmdk-inspect digest says $got_digest, qemu-img decodes to $want"
  [[ "$got_cat" == "$want" ]] || die "vmdk-inspect cat gives sha256 $got_cat, qemu-img decodes to $want"
  log "ok: both decode disk.vmdk to sha256 $want"
fi

# ---- Jobs -----------------------------------------------------------------------
remove_qraw() { rm -f "$qraw"; }
disk_label="$(numfmt --to=iec-i --suffix=B "$(stat -c %s "$disk_raw")")"

for job in $JOBS; do
  case "$job" in
    info)
      ours=("$VMDK_INSPECT" info "$big_vmdk")
      qemu=(qemu-img info "$big_vmdk")
      bench_pair "info, 60 TiB monolithicSparse" "" ours qemu
      ;;
    cat)
      ours=("$VMDK_INSPECT" cat "$disk_vmdk")
      qemu=(qemu-img convert -O raw "$disk_vmdk" "$qraw")
      bench_pair "cat / convert -O raw, $disk_label sparse" remove_qraw ours qemu
      ;;
    digest)
      ours=("$VMDK_INSPECT" digest "$disk_vmdk" --algorithm sha256)
      qemu=(bash -c 'qemu-img convert -O raw "$1" "$2" && sha256sum "$2"' digest "$disk_vmdk" "$qraw")
      bench_pair "digest sha256 / convert + sha256sum, $disk_label sparse" remove_qraw ours qemu
      ;;
    *) die "unknown job: $job (known: info cat digest)" ;;
  esac
done

# ---- Report ---------------------------------------------------------------------
results="$WORK/results-read.md"
{
  echo "## Read benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  # shellcheck disable=SC1090,SC2154
  (source "$disk_raw.info" &&
    echo "- Test disk: $((disk_size >> 30)) GiB GPT + ext4 holding $data_bytes bytes of files: $data_selection; disk.vmdk is $(stat -c %s "$disk_vmdk") bytes")
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache)"
  echo
  bench_table
} | tee "$results"
log "table saved to $results; every timed run is listed in $BENCH_LOG.runs"

#!/usr/bin/env bash
# run-io.sh — random 4 KiB reads and 64 KiB writes through the library (vmdk-bench, several
# threads) against `qemu-img bench` on the same images, sequential 64 MiB writes into an
# empty sparse disk against a baseline build, and the syscalls per grain written (strace -c).
#
#   bash Benchmarks/run-io.sh
#   SEQ_ONLY=1 ...   only the sequential writes and the syscall counts
#   BASE_BENCH=/work/wt-speed-base/.build/release/vmdk-bench BASE_DISK=.../vmdk-disk bash Benchmarks/run-io.sh
#
# Images (in VMDK_BENCH_DIR, default /tmp/vmdk-bench, made once):
#   disk.vmdk    qemu-img's monolithicSparse of make-disk.sh's disk (about 1.6 GB of data)
#   stream.vmdk  qemu-img's streamOptimized of the same (reads only)
#   chain3.vmdk  3 links: disk.vmdk <- mid.vmdk <- chain3.vmdk, each child with 64 MiB written
# qemu-img bench runs with -t writeback (page cache, as our reads) and -i threads, at queue
# depth THREADS; vmdk-bench runs THREADS threads of blocking requests. Both step through the
# disk by STEP bytes per request (qemu-img bench -S), wrapping at the end; vmdk-bench also
# runs --random (aligned random offsets, a fixed seed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/lib.sh"
WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
mkdir -p "$WORK"
THREADS="${THREADS:-4}"
READS="${READS:-200000}"
WRITES="${WRITES:-4096}"
STEP="${STEP:-$((4096 * 7919))}"
ROUNDS="${BENCH_ROUNDS:-3}"
ensure_commands qemu-img:qemu-utils strace:strace

if [[ -z "${VMDK_BENCH:-}" ]]; then
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-bench >&2 && swift build "${SWIFT_RELEASE[@]}" --product vmdk-disk >&2)
  bin="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)"
  VMDK_BENCH="$bin/vmdk-bench"
  VMDK_DISK="$bin/vmdk-disk"
fi
VMDK_DISK="${VMDK_DISK:-$(dirname "$VMDK_BENCH")/vmdk-disk}"

disk="$WORK/disk.vmdk"
if [[ ! -f "$disk" ]]; then
  [[ -f "$WORK/disk.raw" ]] || bash "$here/make-disk.sh" "$WORK/disk.raw"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$WORK/disk.raw" "$disk"
fi
[[ -f "$WORK/stream.vmdk" ]] || qemu-img convert -O vmdk -o subformat=streamOptimized "$disk" "$WORK/stream.vmdk"
if [[ ! -f "$WORK/chain3.vmdk" ]]; then
  qemu-img create -q -f vmdk -b disk.vmdk -F vmdk "$WORK/mid.vmdk"
  qemu-io -f vmdk -c "write -P 0x11 512M 64M" "$WORK/mid.vmdk" >/dev/null
  qemu-img create -q -f vmdk -b mid.vmdk -F vmdk "$WORK/chain3.vmdk"
  qemu-io -f vmdk -c "write -P 0x22 1G 64M" "$WORK/chain3.vmdk" >/dev/null
fi

median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
# qemu-img bench prints "Run completed in X seconds."
qemu_iops() { # COUNT ARGS...
  local count="$1"; shift
  local s; s="$(qemu-img bench "$@" 2>&1 | awk '/Run completed in/ {print $4}')"
  awk -v c="$count" -v s="$s" 'BEGIN{printf "%.0f\n", c/s}'
}
ours_iops() { "$@" | sed -n 's/.*iops=\([0-9]*\).*/\1/p'; }
ours_mibps() { "$@" | sed -n 's/.*mibps=\([0-9.]*\).*/\1/p'; }

if [[ -z "${SEQ_ONLY:-}" ]]; then
echo "| job | ours IOPS | qemu-img bench IOPS | ours/qemu |"
echo "|---|---:|---:|---:|"
for img in disk.vmdk stream.vmdk chain3.vmdk; do
  a=(); b=(); r=()
  for ((i = 0; i < ROUNDS; i++)); do
    a+=("$(ours_iops "$VMDK_BENCH" read "$WORK/$img" --threads "$THREADS" --count "$READS" --size 4096 --step "$STEP")")
    b+=("$(qemu_iops "$READS" -f vmdk -t writeback -i threads -d "$THREADS" -c "$READS" -s 4096 -S "$STEP" "$WORK/$img")")
    r+=("$(ours_iops "$VMDK_BENCH" read "$WORK/$img" --threads "$THREADS" --count "$READS" --size 4096 --random)")
  done
  ma="$(printf '%s\n' "${a[@]}" | median)"; mb="$(printf '%s\n' "${b[@]}" | median)"; mr="$(printf '%s\n' "${r[@]}" | median)"
  echo "| 4 KiB reads, step $STEP, $THREADS threads / depth, $img | $ma | $mb | $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", a/b}') |"
  echo "| 4 KiB random reads (ours only), $img | $mr | | |"
done

# 64 KiB writes with the same stepping into a fresh empty 4 GiB sparse disk.
a=(); b=()
for ((i = 0; i < ROUNDS; i++)); do
  rm -f "$WORK/w.vmdk"; qemu-img create -q -f vmdk "$WORK/w.vmdk" 4G
  a+=("$(ours_iops "$VMDK_BENCH" write "$WORK/w.vmdk" --threads "$THREADS" --count "$WRITES" --size 65536 --step "$STEP")")
  rm -f "$WORK/w.vmdk"; qemu-img create -q -f vmdk "$WORK/w.vmdk" 4G
  b+=("$(qemu_iops "$WRITES" -w -f vmdk -t writeback -i threads -d "$THREADS" -c "$WRITES" -s 65536 -S "$STEP" "$WORK/w.vmdk")")
done
ma="$(printf '%s\n' "${a[@]}" | median)"; mb="$(printf '%s\n' "${b[@]}" | median)"
echo "| 64 KiB writes, step $STEP, $THREADS threads / depth, empty 4 GiB sparse | $ma | $mb | $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", a/b}') |"
rm -f "$WORK/w.vmdk"
fi

# Sequential 64 MiB into an empty sparse disk, one thread: ours against the baseline build
# and against the floor (dd of 64 MiB in 4 MiB blocks into a new file), interleaved per round.
# Each side's close() fsyncs after its timed region, so the next run starts without dirty pages.
seq_once() { # BENCH SIZE
  rm -f "$WORK/s.vmdk"; qemu-img create -q -f vmdk "$WORK/s.vmdk" 4G; sync
  ours_mibps "$1" write "$WORK/s.vmdk" --threads 1 --count $(((64 << 20) / $2)) --size "$2"
}
dd_once() {
  rm -f "$WORK/f.raw"; sync
  local t0 t1; t0="$(date +%s%N)"
  dd if=/dev/zero of="$WORK/f.raw" bs=4M count=16 status=none
  t1="$(date +%s%N)"
  sync "$WORK/f.raw"
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f\n", 64/((b-a)/1e9)}'
}
echo
echo "| sequential 64 MiB into an empty sparse disk | ours MiB/s | baseline MiB/s | ours/baseline | dd floor MiB/s | ours/floor |"
echo "|---|---:|---:|---:|---:|---:|"
for size in 65536 4194304; do
  o=(); base=(); fl=()
  for ((i = 0; i < ROUNDS; i++)); do
    o+=("$(seq_once "$VMDK_BENCH" "$size")")
    [[ -n "${BASE_BENCH:-}" ]] && base+=("$(seq_once "$BASE_BENCH" "$size")")
    fl+=("$(dd_once)")
  done
  mo="$(printf '%s\n' "${o[@]}" | median)"; mf="$(printf '%s\n' "${fl[@]}" | median)"
  if [[ -n "${BASE_BENCH:-}" ]]; then mb="$(printf '%s\n' "${base[@]}" | median)"; else mb=nan; fi
  echo "| library, $((size / 1024)) KiB writes | $mo | $mb | $(awk -v a="$mo" -v b="$mb" 'BEGIN{printf "%.2f", a/b}') | $mf | $(awk -v a="$mo" -v b="$mf" 'BEGIN{printf "%.2f", a/b}') |"
done
rm -f "$WORK/f.raw"

# Syscalls per grain (1024 grains of 64 KiB) of `vmdk-disk write` of 64 MiB.
head -c $((64 << 20)) /dev/urandom >"$WORK/in64.raw"
per_grain() { # VMDK_DISK
  rm -f "$WORK/s.vmdk"; qemu-img create -q -f vmdk "$WORK/s.vmdk" 4G
  strace -f -c -o "$WORK/strace.txt" -e trace=pwrite64,pread64,lseek,newfstatat,fstat,fsync \
    "$1" write "$WORK/s.vmdk" --offset 0 --input "$WORK/in64.raw"
  awk '$NF ~ /^(pwrite64|pread64|lseek|newfstatat|fstat|fsync)$/ {printf "%s %d (%.3f/grain); ", $NF, $4, $4/1024}' "$WORK/strace.txt"
  echo
}
echo
echo "syscalls of vmdk-disk write, 64 MiB (1024 grains):"
echo "- ours: $(per_grain "$VMDK_DISK")"
[[ -n "${BASE_DISK:-}" ]] && echo "- baseline: $(per_grain "$BASE_DISK")"
rm -f "$WORK/s.vmdk" "$WORK/in64.raw"
echo
bash "$here/machine.sh"

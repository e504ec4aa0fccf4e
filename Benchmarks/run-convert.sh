#!/usr/bin/env bash
# run-convert.sh — vmdk-convert against qemu-img convert, side by side in one run.
#
# Jobs, on the 4 GiB GPT + ext4 disk from make-disk.sh (built at run time in the work dir):
#   raw-sparse      disk.raw          -> monolithicSparse
#   raw-stream      disk.raw          -> streamOptimized
#   stream-raw      disk-stream.vmdk  -> raw   (the source is qemu-img's streamOptimized)
#   sparse-raw      disk.vmdk         -> raw   (the source is qemu-img's monolithicSparse)
#   sparse-stream   disk.vmdk         -> streamOptimized
# and the floor for anything that only moves data: `cp --sparse=always disk.raw`.
#
# For each job: one warm-up run per side, then BENCH_ROUNDS rounds (default 3) alternating
# which side goes first; the table shows the medians of wall time and peak RSS, the time
# ratio ours/qemu, and the output size ratio ours/qemu (bytes allocated on disk for raw
# outputs, file size for VMDK outputs). Before timing, every output of ours is checked with
# `qemu-img compare` against the source, and sparse outputs with `qemu-img check`.
#
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench), BENCH_ROUNDS (default 3),
# JOBS (default all five), VMDK_CONVERT (a binary; skips the build).
# The job arrays are read through namerefs.
# shellcheck disable=SC2034
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=Benchmarks/lib.sh
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
JOBS="${JOBS:-raw-sparse raw-stream stream-raw sparse-raw sparse-stream}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-convert.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time
if [[ -z "${VMDK_CONVERT:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-convert"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-convert >&2)
  VMDK_CONVERT="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/vmdk-convert"
fi
[[ -x "$VMDK_CONVERT" ]] || die "$VMDK_CONVERT is not executable"

disk_raw="$WORK/disk.raw"
disk_vmdk="$WORK/disk.vmdk"
disk_stream="$WORK/disk-stream.vmdk"
out="$WORK/convert-out"
mkdir -p "$out"

if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  log "no $disk_raw yet: building it"
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi
if [[ ! -f "$disk_vmdk" || "$disk_raw" -nt "$disk_vmdk" ]]; then
  log "qemu-img convert disk.raw -> disk.vmdk (monolithicSparse)"
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$disk_raw" "$disk_vmdk.tmp" && mv "$disk_vmdk.tmp" "$disk_vmdk"
fi
if [[ ! -f "$disk_stream" || "$disk_raw" -nt "$disk_stream" ]]; then
  log "qemu-img convert disk.raw -> disk-stream.vmdk (streamOptimized)"
  qemu-img convert -O vmdk -o subformat=streamOptimized "$disk_raw" "$disk_stream.tmp" && mv "$disk_stream.tmp" "$disk_stream"
fi

# Output bytes: allocated blocks for raw (holes are the point), file size for VMDK.
out_size() {
  case "$1" in
    *.raw) echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))) ;;
    *) stat -c %s "$1" ;;
  esac
}

clean_out() { rm -f "$out"/* "$out"/.[!.]* 2>/dev/null || true; }

ROWS=()
run_job() {
  local name="$1" src="$2" type="$3" ext="$4"
  local ours_out="$out/ours.$ext" qemu_out="$out/qemu.$ext"
  local qemu_fmt=(-O vmdk -o "subformat=$type")
  [[ "$type" == raw ]] && qemu_fmt=(-O raw)
  local ours=("$VMDK_CONVERT" "$src" "$ours_out" --type "$type" --quiet)
  local ours_nf=("$VMDK_CONVERT" "$src" "$ours_out" --type "$type" --quiet --no-flush)
  local qemu=(qemu-img convert "${qemu_fmt[@]}" "$src" "$qemu_out")
  # qemu-img convert does not flush its output (its default cache mode for the target is
  # "unsafe"); we fsync before the rename. This third side is qemu-img followed by an fsync
  # of its output (`sync FILE`), the same durability as ours.
  local qemu_sync=(bash -c 'qemu-img convert "${@:2}" && sync "$1"' qemu-sync "$qemu_out" "${qemu_fmt[@]}" "$src" "$qemu_out")

  # Correctness first.
  clean_out
  "${ours[@]}"
  qemu-img compare -q "$src" "$ours_out" || die "[$name] qemu-img compare: our output differs from the source"
  if [[ "$type" != raw ]]; then
    qemu-img check -q "$ours_out" || die "[$name] qemu-img check failed on our output"
  fi
  "${qemu[@]}"
  local ours_size qemu_size
  ours_size="$(out_size "$ours_out")"
  qemu_size="$(out_size "$qemu_out")"
  log "[$name] outputs check out; sizes ours $ours_size, qemu $qemu_size"

  local r res ot=() om=() qt=() qm=() st=() nt=()
  clean_out; _measure res "${ours[@]}"
  clean_out; _measure res "${qemu[@]}"
  for ((r = 1; r <= BENCH_ROUNDS; r++)); do
    local order=(ours sync nf qemu)
    ((r % 2 == 0)) && order=(qemu nf sync ours)
    for side in "${order[@]}"; do
      clean_out
      sync
      case "$side" in
        ours) _measure res "${ours[@]}"; ot+=("${res% *}"); om+=("${res#* }") ;;
        nf) _measure res "${ours_nf[@]}"; nt+=("${res% *}") ;;
        qemu) _measure res "${qemu[@]}"; qt+=("${res% *}"); qm+=("${res#* }") ;;
        sync) _measure res "${qemu_sync[@]}"; st+=("${res% *}") ;;
      esac
    done
    log "[$name] round $r/$BENCH_ROUNDS: ours ${ot[-1]} s, qemu+fsync ${st[-1]} s; ours --no-flush ${nt[-1]} s, qemu ${qt[-1]} s"
  done
  clean_out
  local a b c d e f
  a="$(printf '%s\n' "${ot[@]}" | _median)"; b="$(printf '%s\n' "${om[@]}" | _median)"
  c="$(printf '%s\n' "${qt[@]}" | _median)"; d="$(printf '%s\n' "${qm[@]}" | _median)"
  e="$(printf '%s\n' "${st[@]}" | _median)"; f="$(printf '%s\n' "${nt[@]}" | _median)"
  ROWS+=("$(awk -v n="$name" -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v e="$e" -v f="$f" \
    -v os="$ours_size" -v qs="$qemu_size" -v floor="${FLOOR:-0}" -v fs="${FLOOR_SYNC:-0}" 'BEGIN{
      printf "| %s | %.2f | %.2f | **%.2f** | %.2f | %.2f | %.2f | **%.2f** | %.2f | %.2f | %.0f | %.0f | %.3f | %.1f | %.1f |",
        n, a, e, a/e, a/fs, f, c, f/c, f/floor, c/floor, os/1048576, qs/1048576, os/qs, b/1024, d/1024 }')")
}

# The floor: cp --sparse=always of the raw disk, and the same followed by an fsync.
floor_cp() {
  local r res t=() ts=()
  clean_out; _measure res cp --sparse=always "$disk_raw" "$out/cp.raw"
  for ((r = 1; r <= BENCH_ROUNDS; r++)); do
    clean_out; sync; _measure res cp --sparse=always "$disk_raw" "$out/cp.raw"; t+=("${res% *}")
    clean_out; sync
    _measure res bash -c 'cp --sparse=always "$1" "$2" && sync "$2"' cp-sync "$disk_raw" "$out/cp.raw"
    ts+=("${res% *}")
  done
  clean_out
  FLOOR="$(printf '%s\n' "${t[@]}" | _median)"
  FLOOR_SYNC="$(printf '%s\n' "${ts[@]}" | _median)"
  log "floor: cp --sparse=always disk.raw: $FLOOR s; with fsync: $FLOOR_SYNC s"
}

floor_cp
for job in $JOBS; do
  case "$job" in
    raw-sparse) run_job "raw -> monolithicSparse" "$disk_raw" monolithicSparse vmdk ;;
    raw-stream) run_job "raw -> streamOptimized" "$disk_raw" streamOptimized vmdk ;;
    stream-raw) run_job "streamOptimized -> raw" "$disk_stream" raw raw ;;
    sparse-raw) run_job "monolithicSparse -> raw" "$disk_vmdk" raw raw ;;
    sparse-stream) run_job "monolithicSparse -> streamOptimized" "$disk_vmdk" streamOptimized vmdk ;;
    *) die "unknown job $job" ;;
  esac
done

results="$WORK/results-convert.md"
{
  echo "## Convert benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  # shellcheck disable=SC1090,SC2154
  (source "$disk_raw.info" && echo "- Test disk: $((disk_size >> 30)) GiB GPT + ext4 holding $data_bytes bytes of files: $data_selection")
  echo "- Floor: \`cp --sparse=always disk.raw\` takes $FLOOR s; followed by an fsync of the copy, $FLOOR_SYNC s (medians)"
  echo "- qemu-img convert does not flush its output (target cache mode \"unsafe\"); we fsync before renaming into place unless --no-flush. \"qemu+fsync\" is qemu-img followed by \`sync FILE\`"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache)"
  echo
  echo "Durable (flushed before rename): ours (default) against qemu-img followed by an fsync of its output."
  echo "Not flushed: ours with --no-flush against plain qemu-img convert (its default)."
  echo
  echo "| job | ours (s) | qemu+fsync (s) | ratio | ours/(cp+fsync) | ours --no-flush (s) | qemu-img (s) | ratio | ours --no-flush/cp | qemu/cp | our output MiB | qemu output MiB | size ours/qemu | our peak RSS MiB | qemu peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$results"
log "table saved to $results; every timed run is in $BENCH_LOG.runs"

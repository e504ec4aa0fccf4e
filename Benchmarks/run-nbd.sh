#!/usr/bin/env bash
# run-nbd.sh — vmdk-convert from an NBD export against qemu-img convert and nbdcopy reading
# the same export, side by side in one run.
#
# One qemu-nbd (read-only, raw, on 127.0.0.1) serves the 4 GiB GPT + ext4 benchmark disk from
# make-disk.sh. Jobs:
#   nbd-raw     nbd://… -> raw file:  ours, qemu-img convert -O raw, nbdcopy (to a file)
#   nbd-stream  nbd://… -> streamOptimized:  ours, qemu-img convert -O vmdk -o subformat=…
#   nbd-null    reading the whole export and throwing it away: `vmdk-inspect cat` > /dev/null
#               against `nbdcopy … null:` (the transport alone)
# None of the writers flush (qemu-img and nbdcopy do not by default; ours runs with
# --no-flush). Each output of ours is checked with `qemu-img compare` against the raw disk
# first. Medians of BENCH_ROUNDS (default 3) alternating rounds after one warm-up run each.
#
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench), BENCH_ROUNDS, JOBS (default all),
# VMDK_CONVERT / VMDK_INSPECT (binaries; skip the build), NBD_PORT (default 10877).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
JOBS="${JOBS:-nbd-raw nbd-stream nbd-null}"
PORT="${NBD_PORT:-10877}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-nbd.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils qemu-nbd:qemu-utils nbdcopy:libnbd-bin /usr/bin/time:time
for tool in vmdk-convert vmdk-inspect; do
  var="VMDK_$(echo "${tool#vmdk-}" | tr a-z A-Z)"
  if [[ -z "${!var:-}" ]]; then
    log "building: swift build ${SWIFT_RELEASE[*]} --product $tool"
    (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product "$tool" >&2)
    printf -v "$var" '%s' "$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/$tool"
  fi
  [[ -x "${!var}" ]] || die "${!var} is not executable"
done

disk_raw="$WORK/disk.raw"
out="$WORK/nbd-out"
mkdir -p "$out"
if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  log "no $disk_raw yet: building it"
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi

url="nbd://127.0.0.1:$PORT/"
qemu-nbd --read-only --persistent --shared 16 -f raw --bind 127.0.0.1 --port "$PORT" "$disk_raw" \
  2>>"$BENCH_LOG" &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  nbdinfo --size "$url" >/dev/null 2>&1 && break
  sleep 0.05
done
nbdinfo --size "$url" >/dev/null || die "qemu-nbd did not start on port $PORT"
log "qemu-nbd serves $disk_raw at $url"

clean_out() { rm -f "$out"/* "$out"/.[!.]* 2>/dev/null || true; }

# run_sides NAME SIDE... — each SIDE is the name of an array holding one command; prints the
# median wall time and peak RSS of each, in order, into the variables MED_<side>/RSS_<side>.
run_sides() {
  local name="$1"; shift
  local side r res
  declare -gA MED RSS
  declare -A times=() rss=()
  for side in "$@"; do
    local -n cmd="$side"
    clean_out; _measure res "${cmd[@]}"
  done
  for ((r = 1; r <= BENCH_ROUNDS; r++)); do
    local order=("$@")
    ((r % 2 == 0)) && order=($(printf '%s\n' "$@" | tac))
    for side in "${order[@]}"; do
      local -n cmd="$side"
      clean_out; sync
      _measure res "${cmd[@]}"
      times[$side]+="${res% *} "
      rss[$side]+="${res#* } "
    done
    log "[$name] round $r/$BENCH_ROUNDS done"
  done
  clean_out
  for side in "$@"; do
    MED[$side]="$(printf '%s\n' ${times[$side]} | _median)"
    RSS[$side]="$(printf '%s\n' ${rss[$side]} | _median)"
    log "[$name] $side: ${MED[$side]} s, ${RSS[$side]} KiB"
  done
}

ROWS=()
for job in $JOBS; do
  case "$job" in
    nbd-raw)
      ours=("$VMDK_CONVERT" "$url" "$out/ours.raw" --type raw --quiet --no-flush)
      qemu=(qemu-img convert -f raw -O raw "$url" "$out/qemu.raw")
      nbdcp=(nbdcopy "$url" "$out/nbdcopy.raw")
      clean_out; "${ours[@]}"
      qemu-img compare -q -f raw -F raw "$disk_raw" "$out/ours.raw" || die "[nbd-raw] our output differs"
      run_sides nbd-raw ours qemu nbdcp
      ROWS+=("$(awk -v o="${MED[ours]}" -v q="${MED[qemu]}" -v n="${MED[nbdcp]}" -v or="${RSS[ours]}" -v qr="${RSS[qemu]}" -v nr="${RSS[nbdcp]}" 'BEGIN{
        printf "| nbd:// -> raw | %.2f | %.2f | **%.2f** | %.2f | **%.2f** | %.1f | %.1f | %.1f |", o, q, o/q, n, o/n, or/1024, qr/1024, nr/1024 }')")
      ;;
    nbd-stream)
      ours=("$VMDK_CONVERT" "$url" "$out/ours.vmdk" --type streamOptimized --quiet --no-flush)
      qemu=(qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$url" "$out/qemu.vmdk")
      clean_out; "${ours[@]}"
      qemu-img compare -q -f raw "$disk_raw" "$out/ours.vmdk" || die "[nbd-stream] our output differs"
      run_sides nbd-stream ours qemu
      ROWS+=("$(awk -v o="${MED[ours]}" -v q="${MED[qemu]}" -v or="${RSS[ours]}" -v qr="${RSS[qemu]}" 'BEGIN{
        printf "| nbd:// -> streamOptimized | %.2f | %.2f | **%.2f** | – | – | %.1f | %.1f | – |", o, q, o/q, or/1024, qr/1024 }')")
      ;;
    nbd-null)
      ours=("$VMDK_INSPECT" cat "$url")
      nbdcp=(nbdcopy "$url" null:)
      run_sides nbd-null ours nbdcp
      ROWS+=("$(awk -v o="${MED[ours]}" -v n="${MED[nbdcp]}" -v or="${RSS[ours]}" -v nr="${RSS[nbdcp]}" 'BEGIN{
        printf "| read all of nbd:// (cat > /dev/null; nbdcopy to null:) | %.2f | – | – | %.2f | **%.2f** | %.1f | – | %.1f |", o, n, o/n, or/1024, nr/1024 }')")
      ;;
    *) die "unknown job $job" ;;
  esac
done

results="$WORK/results-nbd.md"
{
  echo "## NBD benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  # shellcheck disable=SC1090,SC2154
  (source "$disk_raw.info" && echo "- Test disk: $((disk_size >> 30)) GiB GPT + ext4 holding $data_bytes bytes of files: $data_selection")
  echo "- Served by one qemu-nbd ($(qemu-nbd --version | head -n 1)) on 127.0.0.1, read-only, raw; nbdcopy $(nbdcopy --version | head -n 1 | awk '{print $2}')"
  echo "- Nothing flushed: ours with --no-flush, qemu-img convert and nbdcopy by default"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache)"
  echo
  echo "| job | ours (s) | qemu-img (s) | ours/qemu | nbdcopy (s) | ours/nbdcopy | our RSS MiB | qemu RSS MiB | nbdcopy RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$results"
log "table saved to $results; every timed run is in $BENCH_LOG.runs"

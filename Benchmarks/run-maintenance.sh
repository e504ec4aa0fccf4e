#!/usr/bin/env bash
# run-maintenance.sh — `vmdk-disk compact` and `vmdk-disk commit` against `qemu-img convert`
# of the same data (the issue's yardstick), side by side in one run.
#
#   compact   a copy of disk.vmdk (qemu-img's monolithicSparse of the 4 GiB test disk, 1.6 GB
#             of grains)                        vs qemu-img convert -O vmdk disk.vmdk out.vmdk
#   commit    child.vmdk (a copy of disk.vmdk relinked with `vmdk-disk rebase --unsafe` onto an
#             empty 4 GiB base.vmdk) committed into base.vmdk
#                                               vs qemu-img convert -O vmdk child.vmdk out.vmdk,
#             and qemu-img commit child.vmdk on the same chain, for information
#
# Both of our commands flush what they write (compact renames a flushed rewrite into place;
# commit fsyncs the parent); qemu-img convert does not flush, so it is also timed followed by
# `sync FILE`. Every run starts from a fresh copy made outside the timed region, after `sync`.
# Medians of BENCH_ROUNDS (default 3) rounds alternating the order, after one warm-up each.
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench), BENCH_ROUNDS, VMDK_DISK (binary).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-maintenance.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"
ensure_commands qemu-img:qemu-utils /usr/bin/time:time
if [[ -z "${VMDK_DISK:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-disk"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-disk >&2)
  VMDK_DISK="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/vmdk-disk"
fi

disk_raw="$WORK/disk.raw"
disk_vmdk="$WORK/disk.vmdk"
out="$WORK/maint-out"
mkdir -p "$out"
if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi
if [[ ! -f "$disk_vmdk" || "$disk_raw" -nt "$disk_vmdk" ]]; then
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$disk_raw" "$disk_vmdk.tmp" && mv "$disk_vmdk.tmp" "$disk_vmdk"
fi

clean() { rm -rf "${out:?}"/* "$out"/.[!.]* 2>/dev/null || true; }
prep_copy() { clean; cp --sparse=always "$disk_vmdk" "$out/work.vmdk"; sync; }
prep_chain() {
  clean
  qemu-img create -q -f vmdk "$out/base.vmdk" 4G
  cp --sparse=always "$disk_vmdk" "$out/child.vmdk"
  (cd "$out" && "$VMDK_DISK" rebase child.vmdk --parent base.vmdk --unsafe >/dev/null)
  sync
}

# time_side RESULT_ARRAY PREP CMD... — one run after PREP; appends the wall time.
ROWS=()
median_of() { printf '%s\n' "$@" | _median; }

run_job() {
  local name="$1" prep="$2" ours_cmd="$3" check="$4"
  shift 4
  local sides=("ours" "convert" "convert+fsync" "$@")
  declare -A times=()
  local r s res
  for s in "${sides[@]}"; do times[$s]=""; done
  # Correctness first: our result equals the source's content.
  "$prep"; eval "$ours_cmd"; eval "$check" || die "[$name] our result differs from the source"
  log "[$name] result checks out"
  for ((r = 0; r <= BENCH_ROUNDS; r++)); do
    local order=("${sides[@]}")
    ((r % 2 == 1)) && order=($(printf '%s\n' "${sides[@]}" | tac))
    for s in "${order[@]}"; do
      "$prep"
      case "$s" in
        ours) _measure res bash -c "$ours_cmd" ;;
        convert) _measure res qemu-img convert -O vmdk "$SRC" "$out/out.vmdk" ;;
        convert+fsync) _measure res bash -c 'qemu-img convert -O vmdk "$1" "$2" && sync "$2"' x "$SRC" "$out/out.vmdk" ;;
        qemu-commit) _measure res qemu-img commit -q "$out/child.vmdk" ;;
      esac
      ((r > 0)) && times[$s]+="${res% *} "
    done
    ((r > 0)) && log "[$name] round $r/$BENCH_ROUNDS done"
  done
  local o c cs qc="n/a"
  # shellcheck disable=SC2086
  o="$(median_of ${times[ours]})"; c="$(median_of ${times[convert]})"; cs="$(median_of ${times[convert+fsync]})"
  # shellcheck disable=SC2086
  [[ -n "${times[qemu-commit]:-}" ]] && qc="$(median_of ${times[qemu-commit]})"
  ROWS+=("$(awk -v n="$name" -v o="$o" -v c="$c" -v cs="$cs" -v qc="$qc" 'BEGIN{
    printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s |", n, o, c, o/c, cs, o/cs, qc }')")
  clean
}

SRC="$out/work.vmdk"
run_job "compact (1.6 GB of grains)" prep_copy \
  "\"$VMDK_DISK\" compact \"$out/work.vmdk\" >/dev/null" \
  "qemu-img compare -q \"$out/work.vmdk\" \"$disk_vmdk\""
SRC="$out/child.vmdk"
run_job "commit (1.6 GB into an empty parent)" prep_chain \
  "\"$VMDK_DISK\" commit \"$out/child.vmdk\" >/dev/null" \
  "qemu-img compare -q \"$out/base.vmdk\" \"$disk_vmdk\"" qemu-commit

results="$WORK/results-maintenance.md"
{
  echo "## Maintenance benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each; every run from a fresh copy"
  echo
  echo "| job | ours (s) | qemu-img convert (s) | ours/convert | convert + fsync (s) | ours/(convert+fsync) | qemu-img commit (s) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$results"
log "table saved to $results"

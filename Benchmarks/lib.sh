# shellcheck shell=bash
# Shared helpers for the benchmark scripts. Source it; do not run it.
#
#   source "$(dirname "$0")/lib.sh"
#
# Provides: log, die, ensure_commands, bench_build_tool, bench_pair, bench_table.
# A new benchmark script (for example a future run-convert.sh) defines its jobs as
# pairs of commands and calls bench_pair for each one, then bench_table.

BENCH_ROUNDS="${BENCH_ROUNDS:-5}"
BENCH_TIME="${BENCH_TIME:-/usr/bin/time}"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run apt-get as root, through sudo when we are not root, or fail with advice.
_apt() {
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
  else
    return 1
  fi
}

# ensure_commands CMD:PACKAGE ... — install PACKAGE (Debian) for every missing CMD.
# CMD may be an absolute path (e.g. /usr/bin/time:time).
ensure_commands() {
  local pair cmd pkg missing=()
  for pair in "$@"; do
    cmd="${pair%%:*}"
    pkg="${pair#*:}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] && continue
    else command -v "$cmd" >/dev/null && continue; fi
    missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing missing packages: ${missing[*]}"
  if ! { _apt update -qq && _apt install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    die "need Debian packages: ${missing[*]} (run as root, or install them first)"
  fi
}

# Every script builds the tools the way they are built for use (README, "Building"): release,
# with the Swift runtime linked into each binary (--static-swift-stdlib), which spares every
# command the dynamic loader's symbol lookups (about 5 ms). One set of flags for all scripts,
# so that one script's build is not undone by the next one's.
SWIFT_RELEASE=(-c release --static-swift-stdlib)

# bench_build_tool: sets VMDK_INSPECT to the release vmdk-inspect binary, building it
# unless VMDK_INSPECT is already set (point it at any binary to skip the build).
bench_build_tool() {
  local root="$1"
  if [[ -n "${VMDK_INSPECT:-}" ]]; then
    [[ -x "$VMDK_INSPECT" ]] || die "VMDK_INSPECT=$VMDK_INSPECT is not executable"
    log "using VMDK_INSPECT=$VMDK_INSPECT (no build)"
    return 0
  fi
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-inspect"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-inspect >&2)
  VMDK_INSPECT="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/vmdk-inspect"
  [[ -x "$VMDK_INSPECT" ]] || die "build finished but $VMDK_INSPECT is missing"
}

_now_ns() { date +%s%N; }

# _measure RESULTVAR CMD... — run CMD once with stdout to /dev/null (stderr kept in a
# log). Stores "WALL_S RSS_KIB" in RESULTVAR. Wall time comes from our own
# nanosecond clock around the run (GNU time's %e has only 10 ms resolution); peak RSS
# is GNU time's %M (largest RSS of the process and the children it waited for).
_measure() {
  local -n _out="$1"; shift
  local tf t0 t1 rc=0
  tf="$(mktemp "${TMPDIR:-/tmp}/bench-time.XXXXXX")"
  t0="$(_now_ns)"
  "$BENCH_TIME" -f '%e %M' -o "$tf" "$@" >/dev/null 2>>"$BENCH_LOG" || rc=$?
  t1="$(_now_ns)"
  if ((rc != 0)); then
    rm -f "$tf"
    die "command failed (exit $rc): $* — see $BENCH_LOG"
  fi
  # The last line of the -o file holds "%e %M".
  local e m
  read -r e m < <(tail -n 1 "$tf")
  rm -f "$tf"
  printf '%s\t%s\t%s\t%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f",(b-a)/1e9}')" "$m" "$e" "$*" >>"$BENCH_LOG.runs"
  _out="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f",(b-a)/1e9}') $m"
}

_median() { sort -g | awk '{v[NR]=$1} END{ if (NR==0) {print "nan"; exit} if (NR%2) print v[(NR+1)/2]; else printf "%.4f\n",(v[NR/2]+v[NR/2+1])/2 }'; }

# Rows accumulated for bench_table.
BENCH_ROWS=()

# bench_pair NAME PREP OURS QEMU
#   NAME  label for the table
#   PREP  name of a shell function run before every single run, outside the timed
#         region (e.g. removing an output file), or "" for none
#   OURS  name of a shell array holding our command
#   QEMU  name of a shell array holding the qemu-img command
# One untimed-for-the-table warm-up run of each side first (so both read from the page
# cache), then BENCH_ROUNDS rounds alternating which side goes first. Medians of
# wall time and of peak RSS go into the table.
bench_pair() {
  local name="$1" prep="$2"
  local -n _ours="$3" _qemu="$4"
  local r res ours_t=() ours_m=() qemu_t=() qemu_m=()
  log "[$name] warm-up"
  [[ -n "$prep" ]] && "$prep"
  _measure res "${_ours[@]}"
  [[ -n "$prep" ]] && "$prep"
  _measure res "${_qemu[@]}"
  for ((r = 1; r <= BENCH_ROUNDS; r++)); do
    local order=(ours qemu)
    ((r % 2 == 0)) && order=(qemu ours)
    local side
    for side in "${order[@]}"; do
      [[ -n "$prep" ]] && "$prep"
      if [[ "$side" == ours ]]; then
        _measure res "${_ours[@]}"
        ours_t+=("${res% *}"); ours_m+=("${res#* }")
      else
        _measure res "${_qemu[@]}"
        qemu_t+=("${res% *}"); qemu_m+=("${res#* }")
      fi
    done
    log "[$name] round $r/$BENCH_ROUNDS: ours ${ours_t[-1]} s, qemu ${qemu_t[-1]} s"
  done
  [[ -n "$prep" ]] && "$prep"
  local ot om qt qm
  ot="$(printf '%s\n' "${ours_t[@]}" | _median)"
  om="$(printf '%s\n' "${ours_m[@]}" | _median)"
  qt="$(printf '%s\n' "${qemu_t[@]}" | _median)"
  qm="$(printf '%s\n' "${qemu_m[@]}" | _median)"
  BENCH_ROWS+=("$(awk -v n="$name" -v ot="$ot" -v om="$om" -v qt="$qt" -v qm="$qm" 'BEGIN{
    ratio = (qt > 0) ? sprintf("%.2f", ot/qt) : "n/a";
    printf "| %s | %.3f | %.3f | %s | %.1f | %.1f |", n, ot, qt, ratio, om/1024, qm/1024 }')")
}

bench_table() {
  echo "| job | ours (s) | qemu-img (s) | ratio ours/qemu | our peak RSS MiB | qemu peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${BENCH_ROWS[@]}"
}

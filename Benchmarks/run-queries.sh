#!/usr/bin/env bash
# run-queries.sh — allocation and change queries on a huge sparse disk: `vmdk-inspect
# allocated` and `vmdk-inspect changed --base` against `qemu-img map`, side by side.
#
# Images (made here at run time, in the work dir, kept and reused):
#   base.vmdk   2 TiB monolithicSparse from `qemu-img create -f vmdk`, with WRITES_BASE
#               (default 10000) writes of 1 MiB by qemu-io at pseudo-random 64 KiB-aligned
#               offsets (a fixed LCG seed, so every run makes the same image): about 10 GB
#               of data scattered over the whole disk (overlaps make it slightly less).
#   child.vmdk  a snapshot of base.vmdk (`qemu-img create -f vmdk -b base.vmdk -F vmdk`)
#               with WRITES_CHILD (default 1000) more writes of 1 MiB at other offsets.
#   qemu-io runs the writes in batches of 500 commands per process; making both images
#   takes a minute or two, most of it writing 11 GB.
#
# Jobs (there is no qemu-img command for either query; qemu-img map is what a qemu user
# runs to answer them, and it computes the same block status):
#   allocated-base   `vmdk-inspect allocated base.vmdk`      vs `qemu-img map --output=json base.vmdk`
#   allocated-chain  `vmdk-inspect allocated child.vmdk`     vs `qemu-img map --output=json child.vmdk`
#   changed          `vmdk-inspect changed child.vmdk --base base.vmdk`
#                                                            vs `qemu-img map --output=json child.vmdk`
#
# Before timing (CHECK=1), our answers are checked against qemu-img map's: the allocated
# bytes of base.vmdk rounded out to 64 KiB chunks, and the bytes at depth 0 of child.vmdk.
#
# Environment:
#   VMDK_BENCH_DIR  work dir (default /tmp/vmdk-bench-queries)
#   BENCH_ROUNDS    timed rounds per job (default 5)
#   JOBS            which jobs (default "allocated-base allocated-chain changed")
#   VMDK_INSPECT    use this binary instead of building .build/release/vmdk-inspect
#   WRITES_BASE, WRITES_CHILD  number of 1 MiB writes (defaults 10000 and 1000)
#   CHECK           1 (default) checks our answers against qemu-img map first; 0 skips
# shellcheck disable=SC2034
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-queries}"
JOBS="${JOBS:-allocated-base allocated-chain changed}"
CHECK="${CHECK:-1}"
WRITES_BASE="${WRITES_BASE:-10000}"
WRITES_CHILD="${WRITES_CHILD:-1000}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-queries.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils qemu-io:qemu-utils /usr/bin/time:time jq:jq
bench_build_tool "$root"

base="$WORK/base.vmdk"
child="$WORK/child.vmdk"
CAPACITY=$((2 << 40))

# write_commands N SEED PATTERN: N qemu-io write commands of 1 MiB at pseudo-random
# 64 KiB-aligned offsets below the capacity (an LCG, so the list is the same every run).
write_commands() {
  awk -v n="$1" -v seed="$2" -v pat="$3" -v cap="$CAPACITY" 'BEGIN {
    # Park-Miller: every product stays below 2^53, so awk computes it exactly.
    x = seed; slots = cap / 65536 - 16
    for (i = 0; i < n; i++) {
      x = (x * 16807) % 2147483647
      printf "write -q -P %s %.0f 1M\n", pat, (x % slots) * 65536
    }
  }'
}

# run_writes IMAGE N SEED PATTERN: the writes, 500 per qemu-io process.
run_writes() {
  local image="$1" args=() line
  while IFS= read -r line; do
    args+=(-c "$line")
    if ((${#args[@]} >= 1000)); then
      qemu-io -f vmdk "${args[@]}" "$image" >/dev/null
      args=()
    fi
  done < <(write_commands "$2" "$3" "$4")
  ((${#args[@]} == 0)) || qemu-io -f vmdk "${args[@]}" "$image" >/dev/null
}

# ---- Images -------------------------------------------------------------------
if [[ ! -f "$base" ]]; then
  log "qemu-img create -f vmdk base.vmdk 2T, then $WRITES_BASE writes of 1 MiB"
  qemu-img create -q -f vmdk "$WORK/base.tmp.vmdk" 2T
  t0="$(_now_ns)"
  run_writes "$WORK/base.tmp.vmdk" "$WRITES_BASE" 12345 0xa5
  log "base.vmdk written in $(awk -v a="$t0" -v b="$(_now_ns)" 'BEGIN{printf "%.1f",(b-a)/1e9}') s"
  mv "$WORK/base.tmp.vmdk" "$base"
  rm -f "$child"
fi
if [[ ! -f "$child" ]]; then
  log "qemu-img create -f vmdk -b base.vmdk -F vmdk child.vmdk, then $WRITES_CHILD writes of 1 MiB"
  (cd "$WORK" && qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.tmp.vmdk)
  run_writes "$WORK/child.tmp.vmdk" "$WRITES_CHILD" 777 0x5a
  mv "$WORK/child.tmp.vmdk" "$child"
fi

# ---- Correctness first ------------------------------------------------------------
if [[ "$CHECK" == 1 ]]; then
  log "checking our answers against qemu-img map"
  # qemu's data ranges rounded out to 64 KiB chunks, merged; total bytes.
  want_alloc="$(qemu-img map --output=json "$base" | jq '[.[] | select(.data) |
      {s: (((.start / 65536) | floor) * 65536), e: ((((.start + .length + 65535) / 65536) | floor) * 65536)}]
    | reduce .[] as $r ({end: 0, total: 0};
        if $r.s >= .end then {end: $r.e, total: (.total + $r.e - $r.s)}
        elif $r.e > .end then {end: $r.e, total: (.total + $r.e - .end)} else . end) | .total')"
  got_alloc="$("$VMDK_INSPECT" allocated "$base" --json | jq '.allocatedBytes')"
  [[ "$want_alloc" == "$got_alloc" ]] || die "allocated base.vmdk: ours $got_alloc bytes, qemu-img map $want_alloc"
  want_changed="$(qemu-img map --output=json "$child" | jq '[.[] | select(.depth == 0 and .present) | .length] | add')"
  got_changed="$("$VMDK_INSPECT" changed "$child" --base "$base" --json | jq '[.changedArea[].length] | add')"
  [[ "$want_changed" == "$got_changed" ]] || die "changed: ours $got_changed bytes, qemu-img map $want_changed"
  log "ok: allocated $got_alloc bytes in base.vmdk, changed $got_changed bytes in child.vmdk"
fi

# ---- Jobs -----------------------------------------------------------------------
for job in $JOBS; do
  case "$job" in
    allocated-base)
      ours=("$VMDK_INSPECT" allocated "$base")
      qemu=(qemu-img map --output=json "$base")
      bench_pair "allocated / map, 2 TiB, $WRITES_BASE MiB scattered" "" ours qemu
      ;;
    allocated-chain)
      ours=("$VMDK_INSPECT" allocated "$child")
      qemu=(qemu-img map --output=json "$child")
      bench_pair "allocated / map, 2-link chain" "" ours qemu
      ;;
    changed)
      ours=("$VMDK_INSPECT" changed "$child" --base "$base")
      qemu=(qemu-img map --output=json "$child")
      bench_pair "changed --base / map, 2-link chain" "" ours qemu
      ;;
    *) die "unknown job: $job (known: allocated-base allocated-chain changed)" ;;
  esac
done

# ---- Report ---------------------------------------------------------------------
results="$WORK/results-queries.md"
{
  echo "## Query benchmarks ($(date -u +%Y-%m-%d))"
  echo
  bash "$here/machine.sh"
  echo "- base.vmdk: 2 TiB monolithicSparse, $(stat -c %s "$base") bytes ($(du -k "$base" | cut -f1) KiB on disk); child.vmdk: $(stat -c %s "$child") bytes"
  echo "- Medians of $BENCH_ROUNDS alternating rounds after one warm-up run each (warm page cache)"
  echo
  bench_table
} | tee "$results"
log "table saved to $results; every timed run is listed in $BENCH_LOG.runs"

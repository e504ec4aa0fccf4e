#!/usr/bin/env bash
# run-serve.sh — vmdk-serve against qemu-nbd serving the same image, read by the same clients,
# side by side in one run.
#
# Images (made from make-disk.sh's 4 GiB GPT + ext4 disk with about 1.6 GB of data, by
# qemu-img so that neither side reads its own writer's output):
#   sparse   monolithicSparse
#   stream   its streamOptimized twin
#   chain    a 3-link chain: the sparse image as base, two qemu-img snapshots on top, each with
#            64 MiB of random writes (qemu-io)
# Jobs per image, each client against vmdk-serve and against qemu-nbd (read-only, same
# connection count allowed):
#   IMAGE-nbdcopy   nbdcopy --connections=4 nbd://… null:
#   IMAGE-convert   qemu-img convert -O raw nbd://… out.raw
# Medians of BENCH_ROUNDS (default 3) alternating rounds after one warm-up run each (lib.sh's
# bench_pair; the "qemu" columns are qemu-nbd). The peak RSS of each server process (VmHWM)
# after all its jobs is printed under the table.
#
# Environment: VMDK_BENCH_DIR (default /tmp/vmdk-bench-serve), BENCH_ROUNDS, IMAGES (default
# "sparse stream chain"), VMDK_SERVE (a binary; skips the build), PORT_OURS / PORT_QEMU
# (default 10891 / 10892).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-serve}"
IMAGES="${IMAGES:-sparse stream chain}"
PORT_OURS="${PORT_OURS:-10891}"
PORT_QEMU="${PORT_QEMU:-10892}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
BENCH_LOG="$WORK/run-serve.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils qemu-nbd:qemu-utils qemu-io:qemu-utils nbdcopy:libnbd-bin /usr/bin/time:time
if [[ -z "${VMDK_SERVE:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-serve"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-serve >&2)
  VMDK_SERVE="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/vmdk-serve"
fi
[[ -x "$VMDK_SERVE" ]] || die "$VMDK_SERVE is not executable"

disk_raw="$WORK/disk.raw"
if [[ ! -f "$disk_raw" || ! -f "$disk_raw.info" ]]; then
  log "no $disk_raw yet: building it"
  bash "$here/make-disk.sh" "$disk_raw" >/dev/null
fi

make_images() {
  [[ -f "$WORK/sparse.vmdk" ]] || qemu-img convert -O vmdk -o subformat=monolithicSparse "$disk_raw" "$WORK/sparse.vmdk"
  [[ -f "$WORK/stream.vmdk" ]] || qemu-img convert -O vmdk -o subformat=streamOptimized "$disk_raw" "$WORK/stream.vmdk"
  if [[ ! -f "$WORK/chain-top.vmdk" ]]; then
    cp --sparse=always "$WORK/sparse.vmdk" "$WORK/chain-base.vmdk"
    local link i off parent=base
    # Each link is written before the next is made on it (a write changes the link's CID).
    for link in mid top; do
      qemu-img create -q -f vmdk -b "chain-$parent.vmdk" -F vmdk "$WORK/chain-$link.vmdk"
      parent=$link
      local cmds=()
      for ((i = 0; i < 64; i++)); do
        off=$(( (RANDOM * 32768 + RANDOM) % 4096 ))
        cmds+=(-c "write -P $((i + 1)) $((off))M 1M")
      done
      qemu-io -f vmdk "${cmds[@]}" "$WORK/chain-$link.vmdk" >/dev/null
    done
  fi
}
make_images

declare -A file=([sparse]="$WORK/sparse.vmdk" [stream]="$WORK/stream.vmdk" [chain]="$WORK/chain-top.vmdk")
ours_pid=""
qemu_pid=""
stop_servers() {
  [[ -n "$ours_pid" ]] && kill -TERM "$ours_pid" 2>/dev/null && wait "$ours_pid" 2>/dev/null || true
  [[ -n "$qemu_pid" ]] && kill -TERM "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null || true
  ours_pid=""
  qemu_pid=""
}
trap stop_servers EXIT

wait_port() {
  local port="$1" i
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $port"
}

rm_out() { rm -f "$WORK/out.raw"; }
RSS_LINES=()
for image in $IMAGES; do
  f="${file[$image]:-}"
  [[ -n "$f" ]] || die "unknown image $image"
  "$VMDK_SERVE" "$f" --tcp "127.0.0.1:$PORT_OURS" --connections 8 2>>"$BENCH_LOG" &
  ours_pid=$!
  qemu-nbd -r -f vmdk --shared 8 --persistent -b 127.0.0.1 -p "$PORT_QEMU" "$f" 2>>"$BENCH_LOG" &
  qemu_pid=$!
  wait_port "$PORT_OURS"
  wait_port "$PORT_QEMU"
  # The same bytes from both before anything is timed.
  a="$(nbdcopy "nbd://127.0.0.1:$PORT_OURS/" - | sha256sum)"
  b="$(nbdcopy "nbd://127.0.0.1:$PORT_QEMU/" - | sha256sum)"
  [[ "$a" == "$b" ]] || die "$image: vmdk-serve and qemu-nbd serve different bytes"

  ours_copy=(nbdcopy --connections=4 "nbd://127.0.0.1:$PORT_OURS/" null:)
  qemu_copy=(nbdcopy --connections=4 "nbd://127.0.0.1:$PORT_QEMU/" null:)
  bench_pair "$image-nbdcopy" "" ours_copy qemu_copy
  ours_conv=(qemu-img convert -O raw "nbd://127.0.0.1:$PORT_OURS/" "$WORK/out.raw")
  qemu_conv=(qemu-img convert -O raw "nbd://127.0.0.1:$PORT_QEMU/" "$WORK/out.raw")
  bench_pair "$image-convert" rm_out ours_conv qemu_conv
  RSS_LINES+=("$image: vmdk-serve peak RSS $(awk '/VmHWM/{print $2/1024}' "/proc/$ours_pid/status") MiB, qemu-nbd $(awk '/VmHWM/{print $2/1024}' "/proc/$qemu_pid/status") MiB")
  stop_servers
done

echo "Columns 'qemu-img' are qemu-nbd serving the same image to the same client."
bench_table
printf '%s\n' "${RSS_LINES[@]}"

#!/usr/bin/env bash
# machine.sh — print the machine a benchmark ran on, as markdown list items.
set -uo pipefail

cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)"
[[ -z "$cpu" ]] && cpu="$(uname -m)"
cores="$(nproc 2>/dev/null || echo '?')"
mem="$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
os="$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
kernel="$(uname -sr)"
qemu="$(qemu-img --version 2>/dev/null | head -n 1 || true)"
swift="$(swift --version 2>&1 | grep -m 1 -i 'swift version' || true)"
tmpfs="$(df -PT "${VMDK_BENCH_DIR:-/tmp}" 2>/dev/null | awk 'NR==2 {print $2}')"

echo "- CPU: ${cpu:-?} (${cores} cores available)"
echo "- Memory: ${mem:-?}"
echo "- OS / kernel: ${os:-?} / ${kernel}"
echo "- qemu-img: ${qemu:-not installed}"
echo "- Swift: ${swift:-not installed}"
echo "- Work dir file system: ${tmpfs:-?}"

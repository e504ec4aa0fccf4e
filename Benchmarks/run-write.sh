#!/usr/bin/env bash
# run-write.sh — writer throughput and memory: builds VMDKBlock in release, links
# writers/main.swift against it and runs it in VMDK_BENCH_DIR (default /tmp/vmdk-bench).
# Prints MiB/s per case, then the peak RSS (GNU time %M) of a 60 TiB monolithicSparse
# written at its start and end: the writers keep one grain table in memory, whatever the size.
# (`swift test -c release` is not used: the compiler crashes on another test target.)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=Benchmarks/lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench}"
mkdir -p "$WORK"
ensure_commands /usr/bin/time:time

(cd "$root" && swift build -c release --target VMDKBlock >&2)
rel="$(cd "$root" && swift build -c release --show-bin-path)"
bin="$WORK/write-bench"
swiftc -O "$here/writers/main.swift" -I "$rel/Modules" \
  -Xcc -fmodule-map-file="$root/Sources/CZlib/module.modulemap" \
  -Xcc -fmodule-map-file="$root/Sources/CCrypto/module.modulemap" \
  -Xcc -fmodule-map-file="$root/Sources/CDeflate/module.modulemap" \
  "$rel"/VMDKBlock.build/*.o "$rel"/VMDKFormat.build/*.o "$rel"/VMDKTransport.build/*.o \
  -lz -lcrypto -ldeflate -o "$bin"

"$bin" "$WORK"
/usr/bin/time -f "peak RSS %M KiB, %e s" "$bin" "$WORK" huge

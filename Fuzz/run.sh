#!/usr/bin/env bash
# Builds a libFuzzer target and runs it: the VMDKFormat parsers (the default), or with
# `transport` first the VMDKTransport parsers (Fuzz/FuzzTransport.swift), with `server` the NBD
# server's option and request parsers (Fuzz/FuzzServer.swift).
#
#   Fuzz/run.sh [transport|server|images|files] [SECONDS]  fuzz for SECONDS (default 300), then print the stats
#   Fuzz/run.sh [transport] reproduce FILE...  run the target once on each FILE (a finding, a fixture)
#   Fuzz/run.sh [transport] build              only build .build-fuzz/fuzz-parsers (fuzz-transport)
#
# The target is compiled with swiftc directly (SwiftPM has no fuzzer product): every source of
# Sources/VMDKFormat plus Fuzz/FuzzParsers.swift as one module, with libFuzzer and
# AddressSanitizer. The corpus grows in .build-fuzz/corpus (git-ignored), seeded from
# Fuzz/seeds (pieces of the test builders' images, kept in git) and from the headers,
# descriptors, tails and grains of TestImages/. Crashes, timeouts and out-of-memory inputs
# go to Fuzz/findings/: turn each into a fixture and a regression test (see Fuzz/README.md).
#
# The transport target compiles Sources/VMDKTransport but Net/TLS.swift (OpenSSL; the stand-in
# Fuzz/TLSStandIn.swift takes its place) and LocalFile.swift (C shims), with
# Fuzz/FuzzTransport.swift; its corpus is .build-fuzz/corpus-transport, its seeds
# Fuzz/seeds-transport, its dictionary Fuzz/transport.dict.
#
# `files` (Fuzz/FuzzFiles.swift): the partition-table and file-system parsers of
# Sources/VMDKFiles, compiled with the target into one module over the block layer's modules;
# corpus .build-fuzz/corpus-files, seeds Fuzz/seeds-files (small mke2fs / mkfs.fat / sgdisk /
# sfdisk images, gzipped), dictionary Fuzz/files.dict.
set -euo pipefail
cd "$(dirname "$0")/.."

out=.build-fuzz
bin=$out/fuzz-parsers
findings=Fuzz/findings

target=parsers
if [[ ${1:-} == transport ]]; then
  target=transport
  bin=$out/fuzz-transport
  shift
elif [[ ${1:-} == server ]]; then
  target=server
  bin=$out/fuzz-server
  shift
elif [[ ${1:-} == images ]]; then
  target=images
  bin=$out/fuzz-images
  shift
elif [[ ${1:-} == files ]]; then
  target=files
  bin=$out/fuzz-files
  shift
fi

# swift-log's Logging module (the toolkit logs through it), built once into $out from the
# package's checkout, for the targets that compile VMDKCore.
build_logging() {
  local src=.build/checkouts/swift-log/Sources/Logging
  [[ -d $src ]] || swift package resolve >/dev/null
  [[ -f $out/libLogging.a && $out/libLogging.a -nt $src ]] && return
  # shellcheck disable=SC2046
  swiftc -sanitize=address -parse-as-library -O -g -module-name Logging -package-name swift_log -emit-module \
    -emit-module-path "$out/Logging.swiftmodule" -emit-library -static -o "$out/libLogging.a" \
    $(find "$src" -name '*.swift' | sort)
}

# The images target links the real modules: each Sources/<module> folder (in dependency
# order; VMDKCore only when it exists) is compiled whole into one object and a .swiftmodule,
# with sanitizer coverage, then Fuzz/FuzzImages.swift against them. Folders are globbed, so
# files moving between modules need no change here.
build_images() {
  local mods=$out/images-modules
  rm -rf "$mods"
  mkdir -p "$mods/CPlatform"
  local root
  root=$(pwd)
  cat >"$mods/CPlatform/module.modulemap" <<MAP
module CPlatform {
  header "$root/Sources/CPlatform/include/cplatform.h"
  export *
}
MAP
  clang -fsanitize=fuzzer-no-link,address -O1 -g -c Sources/CPlatform/cplatform.c \
    -I Sources/CPlatform/include -o "$mods/cplatform.o"
  build_logging
  local includes=(-I "$out" -I "$mods" -I "$mods/CPlatform" -I Sources/CZlib -I Sources/CSSL -I Sources/CCrypto -I Sources/CDeflate)
  local objects=("$mods/cplatform.o")
  local m sources
  for m in VMDKCore VMDKFormat VMDKTransport VMDKBlock; do
    [[ -d Sources/$m ]] || continue
    sources=$(find "Sources/$m" -name '*.swift' | sort)
    # shellcheck disable=SC2086
    swiftc -sanitize=fuzzer,address -parse-as-library -O -g -wmo -module-name "$m" -package-name vmdk_toolkit \
      -emit-module -emit-module-path "$mods/$m.swiftmodule" -c $sources -o "$mods/$m.o" "${includes[@]}"
    objects+=("$mods/$m.o")
  done
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -use-ld=lld -module-name FuzzImages \
    Fuzz/FuzzImages.swift "${objects[@]}" "${includes[@]}" -L "$out" -lLogging -lz -lssl -lcrypto -ldeflate -o "$bin"
}

# The files target: VMDKCore, VMDKFormat, VMDKTransport and VMDKBlock each compiled whole into
# $out/files-modules (with AddressSanitizer; a module is rebuilt only when one of its sources is
# newer than its object), then every Sources/VMDKFiles source with Fuzz/FuzzFiles.swift as one
# module with libFuzzer's coverage, so the target reaches the parsers' internal entry points.
build_files() {
  local mods=$out/files-modules
  mkdir -p "$mods/CPlatform"
  local root
  root=$(pwd)
  cat >"$mods/CPlatform/module.modulemap" <<MAP
module CPlatform {
  header "$root/Sources/CPlatform/include/cplatform.h"
  export *
}
MAP
  clang -fsanitize=address -O1 -g -c Sources/CPlatform/cplatform.c -I Sources/CPlatform/include -o "$mods/cplatform.o"
  build_logging
  local includes=(-I "$out" -I "$mods" -I "$mods/CPlatform" -I Sources/CZlib -I Sources/CSSL -I Sources/CCrypto -I Sources/CDeflate)
  local objects=("$mods/cplatform.o")
  local m sources rebuild=0
  for m in VMDKCore VMDKFormat VMDKTransport VMDKBlock; do
    [[ -d Sources/$m ]] || continue
    sources=$(find "Sources/$m" -name '*.swift' | sort)
    # A module whose dependency was rebuilt is rebuilt too.
    if ((rebuild)) || [[ ! -f $mods/$m.o ]] || [[ -n $(find "Sources/$m" -name '*.swift' -newer "$mods/$m.o") ]]; then
      rebuild=1
      # shellcheck disable=SC2086
      swiftc -sanitize=address -parse-as-library -O -g -wmo -module-name "$m" -package-name vmdk_toolkit \
        -emit-module -emit-module-path "$mods/$m.swiftmodule" -c $sources -o "$mods/$m.o" "${includes[@]}"
    fi
    objects+=("$mods/$m.o")
  done
  sources=$(find Sources/VMDKFiles -name '*.swift' | sort)
  # shellcheck disable=SC2086
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -use-ld=lld -module-name FuzzFiles -package-name vmdk_toolkit \
    $sources Fuzz/FuzzFiles.swift "${objects[@]}" "${includes[@]}" -L "$out" -lLogging -lz -lssl -lcrypto -ldeflate \
    -o "$bin"
}

build_transport() {
  mkdir -p "$out"
  build_logging
  local sources
  # VMDKCore is compiled into the same module, so the re-export file is left out.
  sources=$(find Sources/VMDKCore Sources/VMDKTransport -name '*.swift' ! -name TLS.swift ! -name LocalFile.swift \
    ! -name Exports.swift | sort)
  # shellcheck disable=SC2086
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -use-ld=lld -module-name FuzzTransport -package-name vmdk_toolkit \
    -I "$out" -L "$out" -lLogging $sources Fuzz/TLSStandIn.swift Fuzz/FuzzTransport.swift -o "$bin"
}

# The NBD server's parsers (Fuzz/FuzzServer.swift): its two pure files, no other module.
build_server() {
  mkdir -p "$out"
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -use-ld=lld -module-name FuzzServer \
    Sources/NBDServer/NBDProtocol.swift Sources/NBDServer/NBDMessages.swift Fuzz/FuzzServer.swift -o "$bin"
}

build() {
  if [[ $target == server ]]; then
    build_server
    return
  fi
  if [[ $target == transport ]]; then
    build_transport
    return
  fi
  if [[ $target == images ]]; then
    build_images
    return
  fi
  if [[ $target == files ]]; then
    build_files
    return
  fi
  mkdir -p "$out"
  local sources
  sources=$(find Sources/VMDKFormat -name '*.swift' | sort)
  # shellcheck disable=SC2086
  swiftc -sanitize=fuzzer,address -parse-as-library -O -g -use-ld=lld -module-name FuzzParsers \
    $sources Fuzz/FuzzParsers.swift -I Sources/CZlib -lz -o "$bin"
}

# Little-endian unsigned integer of WIDTH bytes at OFFSET of FILE.
le() { od -An -t "u$3" -j "$2" -N "$3" "$1" | tr -d ' \n'; }

# Cuts COUNT bytes at OFFSET of FILE into the seed NAME (skipped when empty).
cut_seed() {
  local file=$1 offset=$2 count=$3 name=$4
  dd if="$file" of="$out/seeds/$name" bs=1 skip="$offset" count="$count" status=none 2>/dev/null || true
  [[ -s $out/seeds/$name ]] || rm -f "$out/seeds/$name"
}

# Seeds from TestImages (populated by another part of the project; absent files are fine).
seed_test_images() {
  rm -rf "$out/seeds"
  mkdir -p "$out/seeds"
  local f name size magic
  while IFS= read -r -d '' f; do
    name=$(echo "${f#TestImages/}" | tr '/' '_')
    size=$(stat -c %s "$f")
    magic=$(head -c 4 "$f" | od -An -t x1 | tr -d ' \n')
    case $magic in
      4b444d56)  # KDMV: header, embedded descriptor, stream tail, first grain marker and data
        cut_seed "$f" 0 512 "$name.header"
        local doff dsize over
        doff=$(le "$f" 28 8)
        dsize=$(le "$f" 36 8)
        if ((doff > 0 && dsize > 0 && dsize <= 2048 && doff * 512 < size)); then
          cut_seed "$f" $((doff * 512)) $((dsize * 512)) "$name.descriptor"
        fi
        ((size >= 1536)) && cut_seed "$f" $((size - 1536)) 1536 "$name.tail"
        over=$(le "$f" 64 8)
        if [[ $(le "$f" 77 2) == 1 ]] && ((over * 512 + 12 < size)); then
          cut_seed "$f" $((over * 512)) 512 "$name.marker"
          local gsize
          gsize=$(le "$f" $((over * 512 + 8)) 4)
          if ((gsize > 0 && gsize <= 131072)); then
            cut_seed "$f" $((over * 512 + 12)) "$gsize" "$name.zlib"
          fi
        fi
        ;;
      434f5744)  # COWD
        cut_seed "$f" 0 2048 "$name.header"
        ;;
      bebafeca)  # seSparse: const and volatile headers
        cut_seed "$f" 0 512 "$name.header"
        cut_seed "$f" 512 512 "$name.volatile"
        ;;
      *)
        if [[ $f == *CompressedGrain.bin ]]; then
          cut_seed "$f" 12 $((size - 12)) "$name.zlib"
        elif ((size <= 65536)) && ! grep -qP '[^\x00\x09\x0a\x0d\x20-\x7e\x80-\xff]' "$f" 2>/dev/null; then
          cp "$f" "$out/seeds/$name"  # a descriptor file
        fi
        ;;
    esac
  done < <(find TestImages -type f \( -name '*.vmdk' -o -name '*.cowd' -o -name '*.bin' \) -print0 2>/dev/null)
}

case ${1:-} in
  build)
    build
    ;;
  reproduce)
    shift
    build
    # Runs each input once; exits non-zero on the first crash.
    SWIFT_BACKTRACE=enable=no "$bin" -runs=1 "$@"
    ;;
  *)
    seconds=${1:-300}
    build
    if [[ $target == transport ]]; then
      mkdir -p "$out/corpus-transport" "$findings"
      echo "seeds: $(ls Fuzz/seeds-transport | wc -l) in Fuzz/seeds-transport"
      # As below; 16 KiB inputs leave room for a handshake, a read's data and block status.
      export SWIFT_BACKTRACE=enable=no
      "$bin" "$out/corpus-transport" Fuzz/seeds-transport \
        -max_total_time="$seconds" -max_len=16384 -timeout=5 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -dict=Fuzz/transport.dict -artifact_prefix="$findings/" -print_final_stats=1
      echo "corpus: $(ls "$out/corpus-transport" | wc -l) inputs in $out/corpus-transport;" \
        "findings: $(ls "$findings" | grep -cv '^\.gitkeep$' || true)"
      exit 0
    fi
    if [[ $target == server ]]; then
      mkdir -p "$out/corpus-server" "$findings"
      export SWIFT_BACKTRACE=enable=no
      "$bin" "$out/corpus-server" \
        -max_total_time="$seconds" -max_len=8192 -timeout=5 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -artifact_prefix="$findings/" -print_final_stats=1
      echo "corpus: $(ls "$out/corpus-server" | wc -l) inputs in $out/corpus-server;" \
        "findings: $(ls "$findings" | grep -cv '^\.gitkeep$' || true)"
      exit 0
    fi
    if [[ $target == images ]]; then
      mkdir -p "$out/corpus-images" "$findings"
      echo "seeds: $(ls Fuzz/seeds-images | wc -l) in Fuzz/seeds-images"
      # Whole images of up to 64 KiB; -jobs stays 1 (one core). As above for the limits.
      export SWIFT_BACKTRACE=enable=no
      "$bin" "$out/corpus-images" Fuzz/seeds-images \
        -max_total_time="$seconds" -max_len=65536 -timeout=5 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -dict=Fuzz/vmdk.dict -artifact_prefix="$findings/" -print_final_stats=1
      echo "corpus: $(ls "$out/corpus-images" | wc -l) inputs in $out/corpus-images;" \
        "findings: $(ls "$findings" | grep -cv '^\.gitkeep$' || true)"
      exit 0
    fi
    if [[ $target == files ]]; then
      mkdir -p "$out/corpus-files" "$findings"
      # The seeds are kept gzipped in git (mostly zeros); libFuzzer reads them unpacked.
      rm -rf "$out/seeds-files"
      mkdir -p "$out/seeds-files"
      for f in Fuzz/seeds-files/*.gz; do gzip -dc "$f" >"$out/seeds-files/$(basename "$f" .gz)"; done
      echo "seeds: $(ls "$out/seeds-files" | wc -l) from Fuzz/seeds-files"
      # Whole small volumes and disks of up to 128 KiB; limits as for the images target.
      export SWIFT_BACKTRACE=enable=no
      "$bin" "$out/corpus-files" "$out/seeds-files" \
        -max_total_time="$seconds" -max_len=131072 -timeout=5 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -dict=Fuzz/files.dict -artifact_prefix="$findings/" -print_final_stats=1
      echo "corpus: $(ls "$out/corpus-files" | wc -l) inputs in $out/corpus-files;" \
        "findings: $(ls "$findings" | grep -cv '^\.gitkeep$' || true)"
      exit 0
    fi
    seed_test_images
    mkdir -p "$out/corpus" "$findings"
    echo "seeds: $(ls Fuzz/seeds | wc -l) from the builders, $(ls "$out/seeds" | wc -l) from TestImages"
    # -malloc_limit_mb: any single allocation above 64 MiB is a finding (no header field may
    # size an allocation); -timeout: one input taking over 5 s is a finding (a header must
    # fail in milliseconds). New inputs go to the first corpus folder.
    export SWIFT_BACKTRACE=enable=no  # the Swift backtracer trips ASan; libFuzzer prints the stack
    "$bin" "$out/corpus" Fuzz/seeds "$out/seeds" \
      -max_total_time="$seconds" -max_len=4096 -timeout=5 -malloc_limit_mb=64 -rss_limit_mb=2048 \
      -dict=Fuzz/vmdk.dict -artifact_prefix="$findings/" -print_final_stats=1
    echo "corpus: $(ls "$out/corpus" | wc -l) inputs in $out/corpus; findings: $(ls "$findings" | grep -cv '^\.gitkeep$' || true)"
    ;;
esac

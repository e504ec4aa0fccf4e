#!/usr/bin/env bash
# Tools/install.sh — install the open VixDiskLib the way VMware's VDDK lays itself out, so that a
# program that takes a "VDDK library folder" (nbdkit's vddk plugin: libdir=PREFIX) accepts PREFIX:
#
#   PREFIX/lib64/libvixDiskLib.so.8        the library (SONAME libvixDiskLib.so.8)
#   PREFIX/lib64/libvixDiskLib.so.7, .so.6, .so   symbolic links to it
#   PREFIX/lib64/libswift*.so, libFoundation*.so, …   the Swift runtime it needs (unless --no-runtime)
#   PREFIX/include/vixDiskLib.h, vixDiskLibExt.h
#   PREFIX/lib64/pkgconfig/vixDiskLib.pc
#
#   bash Tools/install.sh PREFIX [--debug] [--no-build] [--no-runtime]
#
# The Swift runtime: the library's RUNPATH is `$ORIGIN`, so the runtime libraries copied beside
# it are found wherever PREFIX is, with no LD_LIBRARY_PATH and no Swift toolchain on the machine
# (as VDDK bundles its own libraries). With --no-runtime nothing is copied and the RUNPATH names
# the toolchain's runtime folder instead (a machine with the same toolchain at the same path).
# OpenSSL, zlib and libdeflate are the system's (libssl3, zlib1g, libdeflate0).
#
# Needs patchelf (Debian package patchelf; Tools/setup.sh installs it) to set the SONAME and
# RUNPATH: SwiftPM links a dynamic library without a SONAME.
set -euo pipefail

usage() { echo "usage: bash Tools/install.sh PREFIX [--debug] [--no-build] [--no-runtime]" >&2; exit 2; }
(($# >= 1)) || usage
prefix="$1"
shift
config=release
build=1
runtime=1
for arg in "$@"; do
  case "$arg" in
    --debug) config=debug ;;
    --no-build) build=0 ;;
    --no-runtime) runtime=0 ;;
    *) usage ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
command -v patchelf >/dev/null || { echo "install.sh: patchelf is missing (apt-get install patchelf)" >&2; exit 1; }

if ((build)); then
  (cd "$root" && swift build -c "$config" --product vixDiskLib >&2)
fi
bindir="$(cd "$root" && swift build -c "$config" --show-bin-path)"
lib="$bindir/libvixDiskLib.so"
[[ -f "$lib" ]] || { echo "install.sh: $lib is missing; build it first (swift build -c $config --product vixDiskLib)" >&2; exit 1; }

mkdir -p "$prefix/lib64/pkgconfig" "$prefix/include"
prefix="$(cd "$prefix" && pwd)"
libdir="$prefix/lib64"

# The Swift runtime folder the library was linked against (its RUNPATH's first entry).
swiftlib="$(patchelf --print-rpath "$lib" | tr ':' '\n' | grep -v '^\$ORIGIN' | head -n 1 || true)"

install -m 0755 "$lib" "$libdir/libvixDiskLib.so.8.tmp"
patchelf --set-soname libvixDiskLib.so.8 "$libdir/libvixDiskLib.so.8.tmp"
if ((runtime)); then
  [[ -n "$swiftlib" && -d "$swiftlib" ]] || { echo "install.sh: cannot find the Swift runtime folder" >&2; exit 1; }
  # Every library the loader resolves from the runtime folder, recursively (ldd lists them all).
  ldd "$lib" | awk -v dir="$swiftlib/" 'index($3, dir) == 1 { print $3 }' | sort -u | while read -r dep; do
    install -m 0644 "$dep" "$libdir/$(basename "$dep").tmp"
    patchelf --set-rpath '$ORIGIN' "$libdir/$(basename "$dep").tmp"
    mv -f "$libdir/$(basename "$dep").tmp" "$libdir/$(basename "$dep")"
  done
  patchelf --set-rpath '$ORIGIN' "$libdir/libvixDiskLib.so.8.tmp"
else
  patchelf --set-rpath "$swiftlib:\$ORIGIN" "$libdir/libvixDiskLib.so.8.tmp"
fi
mv -f "$libdir/libvixDiskLib.so.8.tmp" "$libdir/libvixDiskLib.so.8"
for name in libvixDiskLib.so.7 libvixDiskLib.so.6 libvixDiskLib.so; do
  ln -sfn libvixDiskLib.so.8 "$libdir/$name"
done

install -m 0644 "$root/Sources/CVixDiskLib/include/vixDiskLib.h" "$root/Sources/CVixDiskLib/include/vixDiskLibExt.h" \
  "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|g" "$root/Tools/vixDiskLib.pc.in" >"$libdir/pkgconfig/vixDiskLib.pc"

echo "installed the open VixDiskLib in $prefix (lib64/libvixDiskLib.so.8, include/vixDiskLib.h)" >&2

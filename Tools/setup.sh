#!/usr/bin/env bash
# Tools/setup.sh — install the Debian packages the build and the tests need.
#
#   bash Tools/setup.sh && swift test
#
# Idempotent and quiet: when every package is already installed (checked with
# dpkg-query) it does nothing and prints nothing. Otherwise it runs apt-get update and
# apt-get install, as root directly or through password-less sudo. On systems without
# dpkg it only prints the package list and exits 0; install the equivalents yourself.
set -euo pipefail

packages=(
  qemu-utils     # qemu-img, qemu-io, qemu-nbd: make test images and decode reference data
  libvmdk-utils  # vmdkinfo: a second, independent reader
  zlib1g-dev     # CZlib
  libssl-dev     # CCrypto (libcrypto) and CSSL (libssl: TLS for nbds:// and https://)
  libdeflate-dev
  pkg-config     # SwiftPM finds zlib and libcrypto through pkg-config
  gzip           # the flat test extent is stored gzipped
  nbdkit         # NBD server with error and delay filters, for the transport fault tests
  libnbd-bin     # nbdcopy, nbdinfo: the benchmark's reference and a second NBD client
  nginx-light    # a web server with range requests, for the HTTP transport tests
  openssl        # makes the test CA, server and client certificates
  gnutls-bin     # certtool, psktool: qemu-nbd's and nbdkit's TLS credentials
  sleuthkit      # mmls, fls, icat: oracles for the partition tables and FAT (FilesTests)
  dosfstools     # mkfs.fat: FAT12/16/32 test volumes
  mtools         # mcopy, mmd: fill and read back FAT test volumes
  gdisk          # sgdisk: GPT test disks
  fdisk          # sfdisk: MBR test disks with logical partitions
  e2fsprogs      # mke2fs -d and debugfs: the ext reader's test images and oracle
  ntfs-3g        # mkntfs and the ntfs-3g FUSE mount: the NTFS reader's test volumes and oracle
  strace         # counts the syscalls of a sparse write (WriteBatchTests) and in Benchmarks/run-io.sh
  patchelf       # Tools/install.sh: sets libvixDiskLib.so.8's SONAME and RUNPATH
  python3-pytest # runs python/tests (PythonPackageTests) against the built libvixDiskLib
  make           # builds Examples/ with its Makefile (VixExampleTests)
  fuse3          # fusermount3 and /dev/fuse's helper: vmdk-mount mounts and unmounts (MountTests)
  libfuse3-dev   # CFuse: vmdk-mount's C shim builds against libfuse3
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup.sh: no dpkg here; make sure these (or their equivalents) are installed: ${packages[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ "$(id -u)" == 0 ]]; then
  run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  run=(sudo)
else
  echo "setup.sh: missing packages ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi

log="$(mktemp "${TMPDIR:-/tmp}/setup-apt.XXXXXX")"
trap 'rm -f "$log"' EXIT
echo "setup.sh: installing ${missing[*]}" >&2
if ! { "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
       "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup.sh: apt-get failed" >&2
  exit 1
fi

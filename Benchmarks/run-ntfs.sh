#!/usr/bin/env bash
# run-ntfs.sh — issue 14's NTFS speed targets, on a 4 GiB GPT disk holding one NTFS of about
# 1.6 GB and 52,000 files (make-ntfs.sh: mkntfs -Q, filled through ntfs-3g), converted with
# qemu-img to monolithicSparse (ntfs.vmdk). Peers read the raw conversion (ntfs.raw, fls and
# tsk_recover with -o 2048), the VMDK where they can (fls -i vmdk), or the raw partition image
# (ntfs.part: ntfsls, ntfscat and ntfs-3g take a volume, not a disk):
#   ls       `vmdk-files ls -R` / `fls -r -p` (raw and -i vmdk) / `ntfsls -R`
#   extract  `vmdk-files extract /` / `tsk_recover -a` / ntfs-3g mount + `cp -a` + umount
#   cat      `vmdk-files cat` of the largest file / `ntfscat`
# (ntfscp copies a host file INTO a volume: it is not an extract peer.)
# Target: at least as fast as the fastest peer.
#
# Before timing: our listing has fls's names (the same sorted list, system files and fls's
# deleted entries and $OrphanFiles left out), ntfsls' count; our extraction has ntfs-3g's
# files with the same md5 (the system files $MFT, $LogFile… at the root, which ntfs-3g
# hides, left out) and tsk_recover's count; `cat` gives ntfscat's md5.
#
# Every run under `nice -n 5`, one warm-up per side, BENCH_ROUNDS (default 3) alternating
# rounds, medians; extract outputs go into a tmpfs.
#
# Environment:
#   VMDK_BENCH_DIR  work dir (default /tmp/vmdk-bench-ntfs); images are made once and kept
#   BENCH_ROUNDS    timed rounds per job (default 3)
#   VMDK_FILES      use this binary instead of building it (release)
#   JOBS            which jobs to run (default "ls extract cat")
#   OUT             where extract jobs write (default /dev/shm/vmdk-bench-ntfs-out, a tmpfs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
export BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
# shellcheck source=lib.sh
source "$here/lib.sh"

WORK="${VMDK_BENCH_DIR:-/tmp/vmdk-bench-ntfs}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
OUT="${OUT:-/dev/shm/vmdk-bench-ntfs-out}"
MNT="$WORK/mnt"
mkdir -p "$OUT" "$MNT"
trap 'if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi; rm -rf "$OUT"' EXIT
BENCH_LOG="$WORK/run-ntfs.log"
: >"$BENCH_LOG"
: >"$BENCH_LOG.runs"

ensure_commands qemu-img:qemu-utils /usr/bin/time:time fls:sleuthkit tsk_recover:sleuthkit ntfsls:ntfs-3g \
  ntfscat:ntfs-3g ntfs-3g:ntfs-3g sgdisk:gdisk

if [[ -z "${VMDK_FILES:-}" ]]; then
  log "building: swift build ${SWIFT_RELEASE[*]} --product vmdk-files"
  (cd "$root" && swift build "${SWIFT_RELEASE[@]}" --product vmdk-files >&2)
  VMDK_FILES="$(cd "$root" && swift build "${SWIFT_RELEASE[@]}" --show-bin-path)/vmdk-files"
fi
[[ -x "$VMDK_FILES" ]] || die "$VMDK_FILES is not executable"

raw="$WORK/ntfs.raw"
part="$WORK/ntfs.part"
vmdk="$WORK/ntfs.vmdk"
if [[ ! -f "$vmdk" || ! -f "$part" ]]; then
  rm -f "$vmdk"
  bash "$here/make-ntfs.sh" "$raw" >&2
  qemu-img convert -O vmdk -o subformat=monolithicSparse "$raw" "$vmdk"
fi
# shellcheck disable=SC1090
source "$raw.info"
sector="$partition_sector"

# Listing: the same names as fls, whose lines are "r/r 64-128-2:\tpath" (deleted entries with a
# "*"). System files ($MFT…, $Extend/…, and their streams $BadClus:$Bad…) are left out of both
# sides; the tree has no other alternate data streams (names with ":" are file names here).
ours_list="$WORK/ls-ours.txt"
"$VMDK_FILES" ls -R "$vmdk" | sed 's|^/||' | grep -v -e '^\$' | LC_ALL=C sort >"$ours_list"
fls -r -p -o "$sector" "$raw" | grep -v -e '^[^	]*\*' | cut -f2- | grep -v -e '^\$' |
  LC_ALL=C sort >"$WORK/ls-fls.txt"
cmp -s "$ours_list" "$WORK/ls-fls.txt" || die "ls -R and fls list different names: diff $ours_list $WORK/ls-fls.txt"
ours_n="$(wc -l <"$ours_list")"
# ntfsls -R prints each folder's path ("/usr/lib:"), then its names with "." and "..", then an
# empty line. (With -s, system files, ntfsls 2022.10.3 stops at $Extend's record 24: "Could
# not decode the type of inode 24", so it is run without.)
ntfsls_n="$(ntfsls -R "$part" | grep -c -v -e '^$' -e '^/.*:$' -e '^\.\.\?$' -e '^\$' || true)"
[[ "$ntfsls_n" == "$ours_n" ]] || die "ls -R lists $ours_n names, ntfsls -R $ntfsls_n"
log "ok: $ours_n names, as fls and ntfsls -R"

N="nice -n 5"
JOBS="${JOBS:-ls extract cat}"
if [[ $JOBS == *ls* ]]; then
  ours=($N "$VMDK_FILES" ls -R "$vmdk")
  theirs=($N fls -r -p -o "$sector" "$raw")
  bench_pair "ls -R (VMDK) / fls -r -p (raw), $ours_n names" "" ours theirs
  theirs=($N fls -r -p -i vmdk -o "$sector" "$vmdk")
  bench_pair "ls -R / fls -r -p -i vmdk, same VMDK" "" ours theirs
  theirs=($N ntfsls -R "$part")
  bench_pair "ls -R (VMDK) / ntfsls -R (partition image)" "" ours theirs
fi

# Extraction: ours against ntfs-3g's mount, for content, before timing.
clean_out() { rm -rf "$OUT/out-ours" "$OUT/out-theirs"; mkdir -p "$OUT/out-theirs"; }
# The unmount is retried: a process of another user of the machine walking /tmp can hold the
# mount busy for a moment.
ntfs3g_cp="ntfs-3g -o ro '$part' '$MNT' && cp -a '$MNT/.' '$OUT/out-theirs' &&
  for i in 1 2 3 4 5 6 7 8 9 10; do umount '$MNT' 2>/dev/null && exit 0; sleep 0.2; done; umount '$MNT'"
clean_out
"$VMDK_FILES" extract --quiet "$vmdk" / --to "$OUT/out-ours" 2>>"$BENCH_LOG"
bash -c "$ntfs3g_cp"
digest_tree() { (cd "$1" && find . -type f ! -path './$*' -print0 | LC_ALL=C sort -z | xargs -0 md5sum | md5sum); }
[[ "$(digest_tree "$OUT/out-ours")" == "$(digest_tree "$OUT/out-theirs")" ]] ||
  die "extract and ntfs-3g + cp -a differ"
files_n="$(find "$OUT/out-ours" -type f ! -path "$OUT/out-ours/\$*" | wc -l)"
bytes_n="$(find "$OUT/out-ours" -type f ! -path "$OUT/out-ours/\$*" -printf '%s\n' | awk '{s += $1} END {print s}')"
log "ok: extract gives ntfs-3g's $files_n files ($bytes_n bytes), same md5"
largest="$(find "$OUT/out-ours" -type f ! -path "$OUT/out-ours/\$*" -printf '%s %P\n' | sort -n | tail -1)"
size="${largest%% *}"
path="/${largest#* }"
md5="$(md5sum <"$OUT/out-ours$path")"
clean_out
tsk_recover -a -o "$sector" "$raw" "$OUT/out-theirs" >/dev/null 2>>"$BENCH_LOG"
tsk_n="$(find "$OUT/out-theirs" -type f ! -path "$OUT/out-theirs/\$*" | wc -l)"
log "tsk_recover -a restores $tsk_n files outside the system files"
if [[ $JOBS == *extract* ]]; then
  ours=($N "$VMDK_FILES" extract --quiet "$vmdk" / --to "$OUT/out-ours")
  theirs=($N tsk_recover -a -o "$sector" "$raw" "$OUT/out-theirs")
  bench_pair "extract / (VMDK) / tsk_recover -a (raw)" clean_out ours theirs
  theirs=($N bash -c "$ntfs3g_cp")
  bench_pair "extract / (VMDK) / ntfs-3g mount + cp -a (partition image)" clean_out ours theirs
fi
clean_out

[[ "$(ntfscat "$part" "$path" | md5sum)" == "$md5" ]] || die "ntfscat $path differs from the extracted file"
[[ "$("$VMDK_FILES" cat "$vmdk" "$path" | md5sum)" == "$md5" ]] || die "vmdk-files cat $path differs"
if [[ $JOBS == *cat* ]]; then
  ours=($N "$VMDK_FILES" cat "$vmdk" "$path")
  theirs=($N ntfscat "$part" "$path")
  bench_pair "cat $path ($size bytes) / ntfscat" "" ours theirs
fi

results="$WORK/results-ntfs.md"
{
  echo "## NTFS benchmarks ($(date -u "+%Y-%m-%d %H:%M") UTC)"
  echo
  bash "$here/machine.sh"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- NTFS in a 4 GiB GPT disk, monolithicSparse; $ours_n names, $files_n files, $bytes_n bytes"
  echo "- 'qemu-img' columns: the peer named in each job. Medians of $BENCH_ROUNDS alternating rounds after one"
  echo "  warm-up run each (warm page cache), every run under nice -n 5"
  echo
  bench_table
} | tee "$results"

#!/usr/bin/env bash
# Re-checks every entry of digests.json against qemu-img, the reference decoder.
#
#   bash TestImages/verify-digests.sh
#
# For each entry: materialise gzipped extents into a temporary folder if the entry
# asks for it, run `qemu-img convert -O raw`, and compare size and every recorded
# digest. Entries with "expectError" must make qemu-img fail. Needs qemu-img, jq,
# gzip and coreutils. Exits non-zero on the first disagreement.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
json="$here/digests.json"
work="$(mktemp -d "${TMPDIR:-/tmp}/vmdk-digests.XXXXXX")"
trap 'rm -rf "$work"' EXIT

for tool in qemu-img jq gzip sha256sum sha1sum md5sum; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

fail=0
count="$(jq length "$json")"
for ((i = 0; i < count; i++)); do
  entry="$(jq -c ".[$i]" "$json")"
  image="$(jq -r .image <<<"$entry")"
  src="$here/$image"

  # Which file does qemu-img open?
  open="$src"
  if [[ "$(jq -r '.verifiedVia // empty' <<<"$entry")" != "" ]]; then
    open="$here/$(jq -r .verifiedVia <<<"$entry")"
  fi
  if [[ "$(jq -r '.materialize // empty | length' <<<"$entry")" != "" ]]; then
    dir="$work/m$i"
    mkdir -p "$dir"
    cp "$src" "$dir/"
    while IFS=$'\t' read -r gz as; do
      gzip -dc "$here/$gz" >"$dir/$as"
    done < <(jq -r '.materialize[] | [.gunzip, .as] | @tsv' <<<"$entry")
    open="$dir/$(basename "$image")"
  fi

  raw="$work/out.raw"
  rm -f "$raw"
  if [[ "$(jq -r '.expectError // empty' <<<"$entry")" != "" ]]; then
    if qemu-img convert -O raw "$open" "$raw" 2>/dev/null; then
      echo "FAIL  $image: expected an error, qemu-img opened it"; fail=1
    else
      echo "ok    $image: refused, as expected"
    fi
    continue
  fi

  if ! qemu-img convert -O raw "$open" "$raw"; then
    echo "FAIL  $image: qemu-img could not convert it"; fail=1; continue
  fi
  want_size="$(jq -r '.virtualSize // empty' <<<"$entry")"
  got_size="$(stat -c %s "$raw")"
  if [[ -n "$want_size" && "$want_size" != "$got_size" ]]; then
    echo "FAIL  $image: size $got_size, expected $want_size"; fail=1
  fi
  for algo in sha256 sha1 md5; do
    want="$(jq -r ".$algo // empty" <<<"$entry")"
    [[ -z "$want" ]] && continue
    got="$("${algo}sum" "$raw" | cut -d' ' -f1)"
    if [[ "$got" == "$want" ]]; then
      echo "ok    $image: $algo $got"
    else
      echo "FAIL  $image: $algo $got, expected $want"; fail=1
    fi
  done
done
exit "$fail"

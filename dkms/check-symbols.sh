#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# check-symbols.sh MODULE.ko MODULE.symvers
#
# Check that every symbol MODULE.ko imports (`nm -u`) is exported by the
# kernel (or a module) listed in MODULE.symvers, in particular every Rust
# (`_R...`, v0-mangled, carrying the crate hashes) symbol.  Prints a summary;
# exits 1 naming every missing symbol.
set -euo pipefail
if [ $# -ne 2 ] || [ ! -f "$1" ] || [ ! -f "$2" ]; then
  echo "usage: $0 MODULE.ko MODULE.symvers" >&2
  exit 2
fi
ko=$1 symvers=$2
NM=${NM:-nm}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '{print $2}' "$symvers" | sort -u > "$tmp/exported"
"$NM" -u "$ko" | awk '{print $NF}' | sort -u > "$tmp/imported"
comm -23 "$tmp/imported" "$tmp/exported" > "$tmp/missing"

n_imp=$(wc -l < "$tmp/imported")
n_rust=$(grep -c '^_R' "$tmp/imported" || true)
n_miss=$(wc -l < "$tmp/missing")
n_rmiss=$(grep -c '^_R' "$tmp/missing" || true)
echo "check-symbols: $ko imports $n_imp symbols ($n_rust Rust): $n_miss missing from $symvers ($n_rmiss Rust)"
if [ "$n_miss" -ne 0 ]; then
  while read -r s; do
    echo "check-symbols: MISSING: $s" >&2
  done < "$tmp/missing"
  exit 1
fi

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# compare-hashes.sh META_DIR SYMVERS
#
# The feasibility check: are the Rust symbols the stock vmlinux exports (the
# `_R...` names in the headers' Module.symvers, which embed each crate's hash)
# exactly the names the regenerated rust/*.o define?  META_DIR is the output
# of rust-meta.sh.  Prints the counts, the crate hashes on both sides and
# every mismatch (with the regenerated name it was compared against when the
# two differ only in crate hashes); exits 1 on any mismatch.
set -euo pipefail
if [ $# -ne 2 ] || [ ! -d "$1/rust" ] || [ ! -f "$2" ]; then
  echo "usage: $0 META_DIR SYMVERS" >&2
  exit 2
fi
meta=$1 symvers=$2
NM=${NM:-nm}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '$3 == "vmlinux" && $2 ~ /^_R/ {print $2}' "$symvers" | sort -u > "$tmp/stock"
"$NM" --defined-only "$meta"/rust/*.o 2>/dev/null | awk 'NF == 3 && $2 ~ /[A-Z]/ && $3 ~ /^_R/ {print $3}' |
  sort -u > "$tmp/regen"
comm -12 "$tmp/stock" "$tmp/regen" > "$tmp/found"
comm -23 "$tmp/stock" "$tmp/regen" > "$tmp/missing"

# Crate references `Cs<hash>_<len><name>`, e.g. Cs2lKf6AS60Zg_4core.
crates() {
  grep -oE 'Cs[0-9A-Za-z]+_[0-9]+[A-Za-z_]+' "$1" |
    sed -E 's/^(Cs[0-9A-Za-z]+_)([0-9]+)(.*)$/\1 \2 \3/' |
    awk '{print $1 substr($3, 1, $2 + 0)}' | sort | uniq -c | sort -rn
}
echo "== crate hashes referenced by the stock vmlinux's exported Rust symbols (count crate):"
crates "$tmp/stock"
echo "== crate hashes in the regenerated rust/*.o exported symbols:"
crates "$tmp/regen"

n_stock=$(wc -l < "$tmp/stock")
n_found=$(wc -l < "$tmp/found")
n_miss=$(wc -l < "$tmp/missing")
echo "== $n_found of $n_stock vmlinux Rust symbols in $symvers are defined verbatim by $meta/rust/*.o ($n_miss missing)"
echo "== examples matched:"
for p in '_4core' '_6kernel' '_8bindings' '_8pin_init'; do
  grep -m1 -- "$p" "$tmp/found" || true
done

if [ "$n_miss" -ne 0 ]; then
  # Compare with crate hashes blanked: hash-only differences vs absent symbols.
  sed -E 's/Cs[0-9A-Za-z]+_/Cs?_/g' "$tmp/regen" | paste - "$tmp/regen" | sort -k1,1 > "$tmp/regen.norm"
  while read -r s; do
    n=$(sed -E 's/Cs[0-9A-Za-z]+_/Cs?_/g' <<< "$s")
    r=$(awk -v n="$n" '$1 == n {print $2; exit}' "$tmp/regen.norm")
    if [ -n "$r" ]; then
      echo "MISMATCH (crate hash only): stock $s"
      echo "                            regen $r"
    else
      echo "MISSING (no such symbol, any hash): $s"
    fi
  done < "$tmp/missing"
  exit 1
fi

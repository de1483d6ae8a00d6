#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build dm-snapshot-rs.ko from scratch against KDIR (default: the cached test
# kernel) with clippy as the Rust compiler driver and W=1, and fail on any
# warning from rustc, clippy, gcc or modpost.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kdir=${KDIR:-$("$here/scripts/kernel.sh")}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}  # as scripts/kernel.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
make -s -C "$kdir" M="$here" clean >/dev/null
if ! make -C "$kdir" M="$here" CLIPPY=1 W=1 -j"$(nproc)" modules >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-module: build failed" >&2
  exit 1
fi
if grep -E -i '(^|[^a-z_])warning[:\[]' "$log" >&2; then
  echo "build-module: warnings (see above)" >&2
  exit 1
fi
echo "build-module: $here/dm-snapshot-rs.ko (no warnings)" >&2
echo "$here/dm-snapshot-rs.ko"

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
# A prepare-only tree (KERNEL_BUILD=prepare) has no Module.symvers: compile
# the objects (rustc, clippy, gcc) without linking the module.
targets=modules
[ ! -f "$kdir/.dm-snapshot-rs-prepare-only" ] || targets="src/dm_snapshot_rs.o src/dm/shim.o"
# shellcheck disable=SC2086
if ! make -C "$kdir" M="$here" CLIPPY=1 W=1 -j"$(nproc)" $targets >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-module: build failed" >&2
  exit 1
fi
if grep -E -i '(^|[^a-z_])warning[:\[]' "$log" >&2; then
  echo "build-module: warnings (see above)" >&2
  exit 1
fi
if [ "$targets" != modules ]; then
  echo "build-module: objects for $kdir compiled, no warnings (prepare-only tree: not linked)" >&2
  exit 0
fi
echo "build-module: $here/dm-snapshot-rs.ko (no warnings)" >&2
echo "$here/dm-snapshot-rs.ko"

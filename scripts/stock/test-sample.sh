#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# End-to-end check of the stock-kernel Rust build: the kernel's own
# samples/rust/rust_minimal.rs (taken from linux-source), as an out-of-tree
# module with a one-line Kbuild, built by build-module.sh (modpost clean,
# every imported symbol in the stock Module.symvers).  Prints the .ko path.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
dir=$(mktemp -d /tmp/stock-sample.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/rust_minimal"
tar -xJOf "$stock_root/usr/src/$srcpkg.tar.xz" --wildcards '*/samples/rust/rust_minimal.rs' \
  > "$dir/rust_minimal/rust_minimal.rs"
echo 'obj-m := rust_minimal.o' > "$dir/rust_minimal/Kbuild"
bash "$stock_here/build-module.sh" "$dir/rust_minimal"

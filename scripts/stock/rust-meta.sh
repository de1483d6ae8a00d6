#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Regenerate, for Debian's unmodified stock kernel $STOCK_KVER, the Rust
# metadata an out-of-tree Rust module needs and the headers package lacks
# (rust/lib*.rmeta, the proc-macro .so files, scripts/target.json), with the
# toolchain Debian used, in the chroot from build-env.sh. The work is done by
# the DKMS package's own `dkms/build.sh --meta` (one implementation: unpack
# linux-source, the headers' .config and .kernelvariables, `make olddefconfig
# prepare rust/`, no vmlinux), run in the chroot with its state directory
# /var/lib/dm-snapshot-rs bind-mounted from $DMSNAP_CACHE/stock-state.
# Prints the result directory (on the host):
#
#   DIR/rust/            the regenerated rust/ objects and metadata
#   DIR/kdir/            a copy of the headers' build dir with rust/ and
#                        scripts/target.json overlaid; a valid M= KDIR inside
#                        the chroot while $DMSNAP_CACHE/stock-state is
#                        bind-mounted at /var/lib/dm-snapshot-rs
#   DIR/versions         the toolchain and package versions it was built with
#
# DIR is $DMSNAP_CACHE/stock-state/rust-meta-<kver>-<key>, <key> hashing the
# kernel release, its .config, the linux-source and headers versions,
# rustc/bindgen/gcc versions (see dkms/build.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
stock_refuse

mkdir -p "$stock_state"
export STOCK_BINDS="$stock_state:/var/lib/dm-snapshot-rs $stock_dkms:/stock/dkms"
inner=$(in_chroot /usr/bin/env JOBS="${JOBS:-2}" bash /stock/dkms/build.sh --meta "$kver" "$hdr")
echo "$stock_state/${inner#/var/lib/dm-snapshot-rs/}"

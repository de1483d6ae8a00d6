#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Regenerate, for Debian's unmodified stock kernel $STOCK_KVER, the Rust
# metadata an out-of-tree Rust module needs and the headers package lacks
# (rust/lib*.rmeta, the proc-macro .so files, scripts/target.json), with the
# toolchain Debian used, in the chroot from build-env.sh: unpack linux-source,
# take the headers' .config and .kernelvariables, `make olddefconfig prepare`
# and `make rust/` (no vmlinux).  Prints the result directory:
#
#   DIR/rust/            the regenerated rust/ objects and metadata
#   DIR/kdir/            a copy of the headers' build dir with rust/ and
#                        scripts/target.json overlaid; a valid M= KDIR inside
#                        the chroot once DIR is bind-mounted at /stock/meta
#   DIR/versions         the toolchain and package versions it was built with
#
# Cached in $DMSNAP_CACHE/stock-rust-<kver>-<key>, <key> hashing the kernel
# release, the linux-source and headers versions, rustc/bindgen/gcc versions.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
stock_refuse

versions=$(
  echo "kver=$kver"
  in_chroot dpkg-query -W "$srcpkg" "linux-headers-$kver" "linux-headers-${kver%-*}-common" \
    rustc rust-src bindgen gcc-14 libclang-dev
  in_chroot rustc -vV
  in_chroot bindgen --version
  in_chroot gcc-14 --version | head -1
  echo "format=1"
)
key=$(printf '%s\n' "$versions" | sha256sum | cut -c1-16)
out=$cache/stock-rust-$kver-$key
if [ -e "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

t0=$(date +%s)
bld=/build/linux-$kver        # inside the chroot; kept for debugging
# shellcheck disable=SC2016
in_chroot /bin/bash -c '
  set -euo pipefail
  kver=$1 srcpkg=$2 hdr=$3 bld=$4
  rm -rf "$bld"; mkdir -p "$bld"
  echo "rust-meta: unpacking /usr/src/$srcpkg.tar.xz" >&2
  tar -xJf "/usr/src/$srcpkg.tar.xz" -C "$bld" --strip-components=1
  cd "$bld"
  cp "$hdr/.config" .config
  cp "$hdr/.kernelvariables" .kernelvariables   # CC=gcc-14, KERNELRELEASE, ...
  mk() { make -j"${JOBS:-2}" HOSTCC=gcc-14 HOSTCXX=g++-14 "$@"; }
  mk olddefconfig >&2
  # The config must come out exactly as Debian shipped it: the toolchain
  # version texts are recomputed by olddefconfig from the tools in the chroot.
  if ! diff -u <(grep -v "^#" "$hdr/.config" | grep .) <(grep -v "^#" .config | grep .) >&2; then
    echo "rust-meta: the config differs from the stock one after olddefconfig (above);" \
         "the toolchain in the chroot is not the one Debian used" >&2
    exit 1
  fi
  echo "rust-meta: make prepare" >&2
  mk prepare >&2
  echo "rust-meta: make rust/" >&2
  mk rust/ >&2
' rust-meta "$kver" "$srcpkg" "$hdr" "$bld"
t1=$(date +%s)

tmp=$out.tmp
rm -rf "$tmp"; mkdir -p "$tmp/rust"
b=$stock_root$bld
cp -a "$b"/rust/*.o "$b"/rust/*.rmeta "$b"/rust/*.so "$b"/rust/exports_*generated.h "$tmp/rust/"
[ ! -d "$b/rust/helpers" ] || { mkdir -p "$tmp/rust/helpers"; cp -a "$b"/rust/helpers/*.o "$tmp/rust/helpers/" 2>/dev/null || true; }
cp -a "$b/scripts/target.json" "$tmp/target.json"
cp -a "$b/include/generated/rustc_cfg" "$tmp/rustc_cfg.regenerated"

# kdir: the headers' build dir (relocated to /stock/meta/kdir, so its
# relative symlinks become absolute), with rust/ and scripts/target.json.
h=$stock_root$hdr
mkdir -p "$tmp/kdir"
(cd "$h" && tar -cf - --exclude=./scripts --exclude=./tools --exclude=./Makefile .) | tar -xf - -C "$tmp/kdir"
ln -s "$(readlink -f "$h/tools" | sed "s|^$stock_root||")" "$tmp/kdir/tools"
# scripts/ must be a real directory to hold target.json: a symlink farm.
kb=$(readlink -f "$h/scripts" | sed "s|^$stock_root||")
mkdir -p "$tmp/kdir/scripts"
for f in "$stock_root$kb"/* "$stock_root$kb"/.[!.]*; do
  [ -e "$f" ] || continue
  ln -s "$kb/${f##*/}" "$tmp/kdir/scripts/${f##*/}"
done
[ -e "$tmp/kdir/scripts/target.json" ] || cp "$tmp/target.json" "$tmp/kdir/scripts/target.json"
sed "s|^KBUILD_OUTPUT=.*|KBUILD_OUTPUT=/stock/meta/kdir|" "$h/Makefile" > "$tmp/kdir/Makefile"
mkdir -p "$tmp/kdir/rust"
cp -a "$tmp"/rust/*.rmeta "$tmp"/rust/*.so "$tmp/kdir/rust/"

{ printf '%s\n' "$versions"; echo "rust_build_seconds=$((t1 - t0))"; } > "$tmp/versions"
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"
echo "rust-meta: built in $((t1 - t0))s: $out" >&2
echo "$out"

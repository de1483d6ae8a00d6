#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install everything the build and the tests need. Idempotent: safe to re-run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

BINDGEN_VERSION=0.73.2
PKGS=(
  linux-source-6.12
  # kernel build
  build-essential bc bison flex libelf-dev libssl-dev dwarves cpio kmod xz-utils rsync python3
  # bindgen: Linux 7.x needs libclang 17 or later (bookworm has 19)
  clang libclang-dev llvm libclang-19-dev
  # VM and guest userspace
  qemu-system-x86 busybox-static dmsetup lvm2 fio e2fsprogs util-linux
  # the stock-kernel build: a trixie chroot with Debian's toolchain
  debootstrap
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: the kernel needs the standard library source.
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  rustup component add rust-src
fi
if ! command -v bindgen >/dev/null || ! bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
  cargo install --locked --version "$BINDGEN_VERSION" bindgen-cli
fi
echo "setup: ok"

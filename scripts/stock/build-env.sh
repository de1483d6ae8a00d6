#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Create (or reuse) a debootstrapped Debian trixie chroot holding the exact
# toolchain Debian used for its stock kernel $STOCK_KVER (rustc, bindgen,
# gcc-14 of trixie) plus that kernel's headers and linux-source from
# trixie-backports.  Prints the chroot's path on stdout.
#
# The chroot lives in $DMSNAP_CACHE/chroot-trixie-<key>, where <key> hashes
# the package list, the suite and the mirror: a changed list builds a new one.
# Idempotent: a finished chroot carries a .complete stamp and is reused.
#
#   STOCK_KVER   kernel release (default 7.3.4+deb13-amd64)
#   STOCK_SRC    linux-source package (default linux-source-7.3)
#   DEBIAN_MIRROR mirror (default: the host's own, else deb.debian.org)
set -euo pipefail
cache=${DMSNAP_CACHE:-/var/cache/dm-snapshot-rs}
kver=${STOCK_KVER:-7.3.4+deb13-amd64}
srcpkg=${STOCK_SRC:-linux-source-7.3}
suite=trixie

mirror=$(bash "$(dirname "$0")/../debian-pkg.sh" mirror)

# From trixie (the toolchain Debian built the kernel with; openssl: the
# config probes `openssl list` for OPENSSL_SUPPORTS_ML_DSA).
base_pkgs=(rustc rust-src bindgen gcc-14 make bc flex bison libelf-dev libssl-dev
           dwarves kmod xz-utils cpio python3 libclang-dev binutils file openssl)
# From trixie-backports (the kernel itself).
bpo_pkgs=("linux-headers-$kver" "$srcpkg")

key=$(printf '%s\n' "$suite" "$mirror" "${base_pkgs[@]}" -- "${bpo_pkgs[@]}" | sha256sum | cut -c1-16)
root=$cache/chroot-$suite-$key

if [ -e "$root/.complete" ]; then
  echo "$root"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "build-env.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
  echo "build-env.sh: installing debootstrap on the host" >&2
  apt-get install -y -qq debootstrap >&2
fi

# A half-built chroot from an interrupted run: start over.
if [ -d "$root" ]; then
  echo "build-env.sh: removing incomplete $root" >&2
  for m in proc sys dev; do umount "$root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$root"
fi
tmp=$root.tmp
for m in proc sys dev; do umount "$tmp/$m" 2>/dev/null || true; done
rm -rf --one-file-system "$tmp"
mkdir -p "$cache"

echo "build-env.sh: debootstrap $suite from $mirror into $tmp" >&2
debootstrap --variant=minbase "$suite" "$tmp" "$mirror" >&2

cat > "$tmp/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $mirror $suite-backports main
EOF
# Keep the chroot free of daemons and of docs we do not need.
printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
chmod +x "$tmp/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true

in_chroot() { chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@"; }
mount -t proc proc "$tmp/proc"
trap 'umount "$tmp/proc" 2>/dev/null || true' EXIT
in_chroot apt-get -qq update >&2
in_chroot apt-get install -y -qq --no-install-recommends "${base_pkgs[@]}" >&2
# -t trixie-backports raises backports for these packages and whatever they
# pull in that trixie lacks; the toolchain above is already installed and
# stays at trixie's versions.
in_chroot apt-get install -y -qq --no-install-recommends -t "$suite-backports" "${bpo_pkgs[@]}" >&2
in_chroot apt-get clean
umount "$tmp/proc"
trap - EXIT

{
  echo "mirror=$mirror"
  echo "key=$key"
  in_chroot dpkg-query -W rustc rust-src bindgen gcc-14 libclang-dev "linux-headers-$kver" "$srcpkg"
} > "$tmp/.complete"
mv "$tmp" "$root"
echo "$root"

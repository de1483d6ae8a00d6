# SPDX-License-Identifier: GPL-2.0
# Shared by scripts/stock/*.sh (sourced, not run).
#
#   stock_dkms            the repository's dkms/ (build.sh: the build itself)
#   stock_state           host dir bound at the chroot's /var/lib/dm-snapshot-rs
#   stock_root            the trixie chroot (created by build-env.sh if needed)
#   in_chroot CMD...      run CMD in the chroot, in a private mount namespace
#                         (so /proc, /dev and the binds vanish with it);
#                         STOCK_BINDS="HOSTDIR:CHROOTDIR ..." adds bind mounts
#   stock_refuse          exit with a reason unless the stock kernel has Rust
#                         and the chroot's rustc/bindgen are the ones it was
#                         built with
# shellcheck shell=bash

stock_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DMSNAP_CACHE:-/var/cache/dm-snapshot-rs}
kver=${STOCK_KVER:-7.3.4+deb13-amd64}
srcpkg=${STOCK_SRC:-linux-source-7.3}
export DMSNAP_CACHE=$cache STOCK_KVER=$kver STOCK_SRC=$srcpkg
hdr=/usr/src/linux-headers-$kver            # inside the chroot
# The DKMS build script (shared) and its state dir (/var/lib/dm-snapshot-rs
# in the chroot, bind-mounted from here).
# shellcheck disable=SC2034  # used by the scripts that source this file
stock_dkms=$(cd "$stock_here/../../dkms" && pwd)
# shellcheck disable=SC2034
stock_state=$cache/stock-state

stock_root=$(bash "$stock_here/build-env.sh")

in_chroot() {
  # shellcheck disable=SC2016
  unshare -m --propagation private /bin/bash -c '
    set -e
    r=$1; shift
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    for b in ${STOCK_BINDS:-}; do
      mkdir -p "$r${b#*:}"
      mount --bind "${b%%:*}" "$r${b#*:}"
    done
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LC_ALL=C.UTF-8 TERM=dumb "$@"' in_chroot "$stock_root" "$@"
}

# The value of a string option in the stock kernel's config ("" if unset).
stock_config() {
  sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$stock_root$hdr/.config"
}

stock_refuse() {
  local cfg=$stock_root$hdr/.config want got
  if [ ! -f "$cfg" ]; then
    echo "stock: $hdr/.config missing in $stock_root: is linux-headers-$kver installed?" >&2
    exit 1
  fi
  if [ "$(stock_config CONFIG_RUST)" != y ]; then
    echo "stock: refusing: linux-headers-$kver has CONFIG_RUST off;" \
         "this kernel cannot load Rust modules at all (use a kernel built with CONFIG_RUST=y)" >&2
    exit 1
  fi
  want=$(stock_config CONFIG_RUSTC_VERSION_TEXT)
  got=$(in_chroot rustc --version 2>/dev/null || echo "(no rustc)")
  if [ "$got" != "$want" ]; then
    echo "stock: refusing: the chroot's rustc is '$got', but $kver was built by '$want'." >&2
    echo "stock: Rust crate hashes (and so every exported Rust symbol name) depend on the" \
         "exact rustc version string.  Install the Debian rustc (and rust-src) whose" \
         "\`rustc --version\` prints exactly '$want' (for 7.3.4+deb13-amd64: trixie's" \
         "1.85.1+dfsg1-1+deb13u1) via base_pkgs in scripts/stock/build-env.sh, which" \
         "then builds a new chroot." >&2
    exit 1
  fi
  want=$(stock_config CONFIG_BINDGEN_VERSION_TEXT)
  got=$(in_chroot bindgen --version 2>/dev/null | head -1 || echo "(no bindgen)")
  if [ "$got" != "$want" ]; then
    echo "stock: refusing: the chroot's bindgen is '$got', but $kver was built with '$want';" \
         "install the Debian bindgen that prints exactly that (for 7.3.4+deb13-amd64:" \
         "trixie's bindgen 0.71.1-6) via base_pkgs in scripts/stock/build-env.sh." >&2
    exit 1
  fi
}

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build (or reuse) the test kernel: bzImage, the reference dm-snapshot.ko and
# friends, and the Rust metadata that out-of-tree modules link against.
#
# The build lives outside the work tree, in $DMSNAP_CACHE (default
# /var/cache/dm-snapshot-rs), keyed by the linux-source package version, the
# config fragment's hash, and the rustc/bindgen versions (Rust metadata is
# compiler-specific). Prints the build directory (KDIR) on stdout.
#
# KERNEL_FLAVOR=test (default) builds from kernel/dm-snapshot-rs.config (lock
# and memory debugging, KUnit); KERNEL_FLAVOR=bench replaces that
# fragment's lines with kernel/bench.config's (no debugging: what
# scripts/bench.sh measures on).
#
# KERNEL_BUILD=prepare stops after `make prepare`, which on 7.x also builds
# the Rust metadata: enough to compile the module (rustc, clippy, gcc) but
# not to link it (no Module.symvers); build-module.sh then builds objects
# only. The default, full, builds bzImage and modules.
#
# KERNEL_SERIES picks the source: 7.3 (default; Debian's linux-source-7.3 from
# trixie-backports, fetched by scripts/debian-pkg.sh) or 6.12 (the host's
# linux-source-6.12 package, the LTS kernel).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
flavor=${KERNEL_FLAVOR:-test}
frag=$(mktemp)
trap 'rm -f "$frag"' EXIT
case $flavor in
  test) cp "$here/kernel/dm-snapshot-rs.config" "$frag" ;;
  bench)
    # The effective fragment: the test fragment's lines for every symbol
    # bench.config does not set, then bench.config's lines.
    syms=$(sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=.*/\1/p' "$here/kernel/bench.config")
    { grep -v -x -E "($(echo $syms | tr ' ' '|'))=.*" "$here/kernel/dm-snapshot-rs.config" || true
      grep '^CONFIG_' "$here/kernel/bench.config"; } > "$frag" ;;
  *) echo "kernel: unknown KERNEL_FLAVOR $flavor (test or bench)" >&2; exit 2 ;;
esac
cache=${DMSNAP_CACHE:-/var/cache/dm-snapshot-rs}
series=${KERNEL_SERIES:-7.3}
jobs=${JOBS:-$(nproc)}

log() { echo "kernel: $*" >&2; }

case $series in
  6.12)
    tarball=/usr/src/linux-source-6.12.tar.xz
    [ -f "$tarball" ] || { log "missing $tarball; run scripts/setup.sh"; exit 1; }
    pkgver=$(dpkg-query -W -f='${Version}' linux-source-6.12) ;;
  7.*)
    deb=$(bash "$here/scripts/debian-pkg.sh" download "linux-source-$series")
    pkgver=$(dpkg-deb -f "$deb" Version)
    src=$cache/src/linux-source-$pkgver
    tarball=$src/usr/src/linux-source-$series.tar.xz
    [ -f "$tarball" ] || { rm -rf "$src"; mkdir -p "$src"; dpkg-deb -x "$deb" "$src"; } ;;
  *) log "unknown KERNEL_SERIES $series (7.3, 7.2 or 6.12)"; exit 2 ;;
esac
# bindgen loads libclang at run time; 7.x wants 17 or later (scripts/setup.sh).
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
toolver=$(rustc --version; bindgen --version; gcc --version | head -1; echo "$LIBCLANG_PATH")
key=$( { echo "$pkgver"; cat "$frag"; echo "$toolver"; } | sha256sum | cut -c1-16)
kdir="$cache/linux-$pkgver-$key"
[ "$flavor" = test ] || kdir="$cache/linux-$pkgver-$flavor-$key"
what=${KERNEL_BUILD:-full}
case $what in
  full) ;;
  prepare) kdir="$kdir-prepare" ;;
  *) log "unknown KERNEL_BUILD $what (full or prepare)"; exit 2 ;;
esac
stamp="$kdir/.dm-snapshot-rs-built"

if [ -f "$stamp" ]; then
  echo "$kdir"
  exit 0
fi

log "building $pkgver, $flavor flavor (key $key) in $kdir; this takes a while on a cold cache"
rm -rf "$kdir"
mkdir -p "$kdir"
tar -xf "$tarball" -C "$kdir" --strip-components=1

mk() { make -C "$kdir" ARCH=x86_64 -j"$jobs" "$@"; }
mk -s allnoconfig >&2
# merge_config.sh -n: fragment on top of allnoconfig.
(cd "$kdir" && ARCH=x86_64 scripts/kconfig/merge_config.sh -n -m .config "$frag" >&2)
mk -s olddefconfig >&2

# Every requested symbol must have stuck (CONFIG_RUST silently drops out when
# the toolchain check fails, for example).
bad=0
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  sym=${line%%=*}; val=${line#*=}
  # A symbol this kernel no longer has (PROC_SYSCTL after 6.x) is skipped.
  if ! grep -rqs --include='Kconfig*' -E "^(menu)?config ${sym#CONFIG_}\$" "$kdir"; then
    log "$sym does not exist in $series; skipped"; continue
  fi
  if [ "$val" = n ]; then
    grep -q "^# $sym is not set" "$kdir/.config" || grep -q "^$sym=n" "$kdir/.config" || ! grep -q "^$sym=" "$kdir/.config" || { log "$sym should be off"; bad=1; }
  else
    grep -qx "$line" "$kdir/.config" || { log "$line did not stick (got: $(grep "^$sym=" "$kdir/.config" || echo unset))"; bad=1; }
  fi
done < "$frag"
if [ "$bad" = 1 ]; then
  [ "${CONFIG_CHECK_ONLY:-}" ] || true
  log "config check failed"; exit 1
fi

if [ "$what" = prepare ]; then
  mk prepare >&2
  touch "$kdir/.dm-snapshot-rs-prepare-only"
else
  mk bzImage modules >&2
fi
touch "$stamp"
log "done"
echo "$kdir"

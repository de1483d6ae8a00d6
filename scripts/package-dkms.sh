#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# package-dkms.sh [VERSION]
#
# Build dm-snapshot-rs-dkms_VERSION_all.deb with dpkg-deb (no debhelper),
# following dh-dkms's layout: the module's source in
# /usr/src/dm-snapshot-rs-VERSION/ with dkms.conf, postinst `dkms add/build/
# install` for the installed kernels that have headers, prerm `dkms remove
# --all`. Also ships /etc/modprobe.d/dm-snapshot-rs.conf (the aliases that make
# `modprobe dm-snapshot` load ours) and the initramfs-tools hook.
#
# VERSION defaults to the VERSION file. OUTDIR (default: out/dkms) receives
# the .deb; prints its path.
#
# The modprobe.d file is deliberately not a conffile: dpkg then deletes it on
# `remove`, not only on purge; left behind it would alias dm-snapshot to a
# module that no longer exists, and LVM snapshots would stop loading.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ver=${1:-$(cat "$here/VERSION")}
case $ver in
  [0-9]*) ;;
  *) echo "package-dkms: bad version '$ver' (must start with a digit)" >&2; exit 2 ;;
esac
out=${OUTDIR:-$here/out/dkms}
name=dm-snapshot-rs
pkg=$name-dkms
mkdir -p "$out"
out=$(cd "$out" && pwd)

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
srcdir=$root/usr/src/$name-$ver

# The kernel build needs Kbuild, src/ (minus generated files) and dkms/.
mkdir -p "$srcdir/dkms"
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$here" && git ls-files -z -- src Kbuild) | (cd "$here" && xargs -0 cp --parents -t "$srcdir")
else
  (cd "$here" && find src Kbuild -type f ! -name bindings_generated.rs ! -name '*.o' ! -name '.*' \
     ! -name '*.cmd' ! -name '*.rmeta' -print0) | (cd "$here" && xargs -0 cp --parents -t "$srcdir")
fi
cp "$here/dkms/build.sh" "$here/dkms/check-symbols.sh" "$srcdir/dkms/"
echo "$ver" > "$srcdir/VERSION"
sed "s/@VERSION@/$ver/" "$here/dkms/dkms.conf" > "$srcdir/dkms.conf"

install -D -m 0644 "$here/dkms/modprobe.conf" "$root/etc/modprobe.d/$name.conf"
install -D -m 0755 "$here/dkms/initramfs-hook" "$root/usr/share/initramfs-tools/hooks/$name"
doc=$root/usr/share/doc/$pkg
mkdir -p "$doc"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dm-snapshot-rs

Files: *
License: GPL-2.0-only
 On Debian systems the full text is in /usr/share/common-licenses/GPL-2.
EOF
{
  echo "$pkg ($ver) unstable; urgency=medium"
  echo
  echo "  * Built by scripts/package-dkms.sh from $(git -C "$here" describe --always --dirty 2>/dev/null || echo "a source tree")."
  echo
  echo " -- dm-snapshot-rs developers <dm-snapshot-rs@localhost>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")"
} | gzip -9n > "$doc/changelog.gz"

mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do
  sed "s/@VERSION@/$ver/" "$here/dkms/debian/$s" > "$root/DEBIAN/$s"
  chmod 0755 "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $ver
Architecture: all
Section: kernel
Priority: optional
Maintainer: dm-snapshot-rs developers <dm-snapshot-rs@localhost>
Installed-Size: $size
Depends: dkms (>= 3.0), kmod, rustc, rust-src, bindgen, libclang-dev,
 linux-source-7.3 | linux-source, make, bc, flex, bison, libelf-dev, libssl-dev,
 python3, xz-utils, openssl, cpio
Recommends: lvm2, linux-headers-amd64
Suggests: initramfs-tools
Description: device-mapper snapshot targets in Rust (DKMS source)
 dm-snapshot-rs provides device-mapper's snapshot, snapshot-origin and
 snapshot-merge targets (LVM2 snapshots, lvconvert --merge) as a Rust kernel
 module, a drop-in for the kernel's dm-snapshot. This package builds it with
 DKMS for every installed kernel with Rust support (Debian's 7.x kernels),
 makes "modprobe dm-snapshot" load it and adds it to the initramfs.
 .
 The kernel's Rust metadata, which linux-headers lack, is regenerated once
 per kernel from linux-source with the kernel's own rustc and bindgen
 (cached in /var/lib/dm-snapshot-rs).
EOF
find "$root" -type d -exec chmod 0755 {} +
find "$root/usr/src" -type f -exec chmod 0644 {} +
chmod 0755 "$srcdir/dkms/build.sh" "$srcdir/dkms/check-symbols.sh"
deb=$out/${pkg}_${ver}_all.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"

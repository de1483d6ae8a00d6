#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Make a KDIR-shaped directory from Debian's unmodified stock kernel packages,
# for scripts/vm/run.sh:
#   vm-kernel.sh [VERSION]      (default 7.3.4+deb13-amd64)
# prints the directory (KDIR) on stdout. Then, e.g.:
#   bash scripts/vm/run.sh "$KDIR" "$KDIR/drivers/md/dm-snapshot.ko" OUT stock-smoke
#
# Fetches linux-binary-VERSION (the vmlinuz), linux-modules-VERSION (the
# .ko.xz tree) and linux-base-VERSION (config, modules.order,
# modules.builtin) with scripts/debian-pkg.sh (no host apt sources touched) and builds, in
# $DMSNAP_CACHE/stock-VERSION (default cache /var/cache/dm-snapshot-rs),
# rebuilt only when the package versions change (.pkg-versions):
#
#   arch/x86/boot/bzImage    the stock vmlinuz, as is
#   drivers/md/*.ko          dm-bufio, dm-snapshot, dm-flakey, dm-log-writes,
#                            dm-delay, decompressed (busybox insmod, and
#                            finit_module without MODULE_INIT_COMPRESSED_FILE,
#                            want plain ELF): what mkinitramfs.sh puts in
#                            the guest's /modules like a project kernel's
#   vm-base-modules          what the guest must insmod before any scenario,
#                            in load order (modules.dep order), one path a
#                            line, relative to KDIR: virtio_blk and dm-mod
#                            with their dependencies (built into our kernels,
#                            modules in Debian's)
#   vm-modroot/lib/modules/VERSION/
#                            the guest's module tree: every dm-*.ko plus
#                            virtio_blk and everything they depend on,
#                            decompressed, with modules.dep etc. from depmod;
#                            mkinitramfs.sh copies vm-modroot/ over the
#                            guest's root, so `modprobe dm-snapshot` (busybox)
#                            resolves in /lib/modules/$(uname -r)
#   full/lib/modules/VERSION/  the whole distro tree (.ko.xz as shipped) with
#                            depmod's output, on the host only (not in the
#                            guest), e.g. for `modinfo -b full ...` or
#                            `modprobe -d full -S VERSION --show-depends X`
#
# The guest has no /sbin/modprobe, so the kernel's own request_module()
# (e.g. dm-mod asking for an unknown target) cannot autoload: as with the
# project's kernels, a scenario loads what it uses. A scenario that wants
# autoloading can `ln -s /bin/busybox /sbin/modprobe` first.
#
# Adding a module to updates/ (e.g. a DKMS-style build of dm-snapshot that
# must shadow the distro's under the same name): work on a copy, then rerun
# depmod on the host; kmod's default search order puts updates/ before the
# distro's kernel/ tree:
#   mkdir /tmp/kd; cp -a "$KDIR"/{arch,drivers,vm-base-modules,vm-modroot} /tmp/kd/
#   mkdir -p /tmp/kd/vm-modroot/lib/modules/VERSION/updates
#   cp my/dm-snapshot.ko /tmp/kd/vm-modroot/lib/modules/VERSION/updates/
#   depmod -b /tmp/kd/vm-modroot VERSION
#   bash scripts/vm/run.sh /tmp/kd ANY.ko OUT SCENARIO   # guest: modprobe dm-snapshot
# (Never edit the cached KDIR itself: it is shared and only rebuilt when the
# package versions or this script change.) busybox modprobe in the guest
# reads modules.dep only, which depmod writes with the updates/ copy alone.
#
# Our own module for this kernel goes in as run.sh's MODULE.ko argument, as
# for any kernel (the guest's /modules/dm-snapshot-rs.ko). The distro's
# modules are signed (MODULE_SIG_ALL; the signature survives the xz
# decompression), so loading them leaves the kernel untainted; an unsigned
# module loads too (MODULE_SIG_FORCE is off) with taint E.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
ver=${1:-7.3.4+deb13-amd64}
cache=${DMSNAP_CACHE:-/var/cache/dm-snapshot-rs}
kdir=$cache/stock-$ver
log() { echo "stock-kernel: $*" >&2; }

command -v depmod >/dev/null || { log "depmod (kmod) is missing"; exit 1; }
command -v xz >/dev/null || { log "xz is missing"; exit 1; }

mapfile -t debs < <(bash "$here/scripts/debian-pkg.sh" download "linux-binary-$ver" "linux-modules-$ver" "linux-base-$ver")
for d in "${debs[@]}"; do [ -f "$d" ] || { log "download failed: $d"; exit 1; }; done
[ "${#debs[@]}" = 3 ] || { log "download failed"; exit 1; }
versions=$(for d in "${debs[@]}"; do dpkg-deb -f "$d" Package Version | paste -sd' '; done)
# The script's own text is part of the key: a changed layout rebuilds.
key=$(printf '%s\n' "$versions" "$(sha256sum < "$0")")

if [ -f "$kdir/.pkg-versions" ] && [ "$(cat "$kdir/.pkg-versions")" = "$key" ]; then
  echo "$kdir"; exit 0
fi

log "building $kdir from: $(echo "$versions" | paste -sd';')"
tmp=$(mktemp -d "$cache/.stock-$ver.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
x=$tmp/x
for d in "${debs[@]}"; do dpkg-deb -x "$d" "$x"; done
src=$x/usr/lib/modules/$ver
[ -f "$src/vmlinuz" ] || { log "no vmlinuz in linux-binary-$ver"; exit 1; }
[ -d "$src/kernel" ] || { log "no kernel/ tree in linux-modules-$ver"; exit 1; }

# The full distro tree, depmod'ed (depmod -b wants BASE/lib/modules/VERSION).
full=$tmp/full/lib/modules/$ver
mkdir -p "$(dirname "$full")"
mv "$src" "$full"
mv "$full/vmlinuz" "$tmp/vmlinuz"
depmod -b "$tmp/full" "$ver"

# depends_closure MODULE...: the .ko paths (relative to the tree) that
# loading MODULEs needs, each once, in load order.
depends_closure() {
  local m
  for m in "$@"; do
    modprobe -d "$tmp/full" -S "$ver" --show-depends "$m" |
      sed -n "s|^insmod $full/||p" | sed 's/ *$//'
  done | awk '!seen[$0]++'
}

# The guest tree: every dm target module, virtio_blk, their dependencies.
mapfile -t want < <(cd "$full" && find kernel/drivers/md -name 'dm-*.ko.xz' | sed 's|.*/||; s|\.ko\.xz$||' | sort)
# ext4 and loop: the scenarios make and mount filesystems (the project's
# kernels have both built in).
want+=(virtio_blk ext4 loop)
guest=$tmp/vm-modroot/lib/modules/$ver
mkdir -p "$guest"
depends_closure "${want[@]}" | while read -r rel; do
  mkdir -p "$guest/$(dirname "$rel")"
  xz -dc "$full/$rel" > "$guest/${rel%.xz}"
done
cp "$full"/modules.order "$full"/modules.builtin "$full"/modules.builtin.modinfo "$full"/config "$guest/"
# modules.order names .ko.xz; the guest tree holds plain .ko.
sed -i 's/\.ko\.xz$/.ko/' "$guest/modules.order"
depmod -b "$tmp/vm-modroot" "$ver"

# Base modules, in load order; paths relative to KDIR.
depends_closure virtio_blk dm_mod ext4 loop | sed "s|^|vm-modroot/lib/modules/$ver/|; s|\\.xz\$||" > "$tmp/vm-base-modules"

# The dm test modules where mkinitramfs.sh looks for them.
mkdir -p "$tmp/drivers/md" "$tmp/arch/x86/boot"
for m in dm-bufio dm-snapshot dm-flakey dm-log-writes dm-delay; do
  cp "$guest/kernel/drivers/md/$m.ko" "$tmp/drivers/md/"
done
mv "$tmp/vmlinuz" "$tmp/arch/x86/boot/bzImage"
rm -rf "$x"
echo "$ver" > "$tmp/kernelrelease"
echo "$key" > "$tmp/.pkg-versions"
chmod 755 "$tmp"

rm -rf "$kdir"
mv "$tmp" "$kdir"
trap - EXIT
log "base modules: $(paste -sd' ' "$kdir/vm-base-modules")"
echo "$kdir"

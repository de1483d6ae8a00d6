#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the guest initramfs from this machine's Debian binaries:
#   mkinitramfs.sh OUT.cpio.gz KDIR MODULE.ko
# Contents: static busybox, dmsetup, lvm2 (udev off), fio, e2fsprogs, the
# kernel's dm test modules, this project's module and dmsnap tool, the guest init and the
# scenario scripts from tests/vm/.
set -euo pipefail
out=$1 kdir=$2 ko=$3
here=$(cd "$(dirname "$0")/../.." && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/lvm,proc,sys,dev,tmp,run,mnt,modules,tests,var/lock,root}
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# Copy a dynamic binary and the libraries ldd reports for it.
add_bin() {
  local src=$1 dst=${2:-$1}
  mkdir -p "$root/$(dirname "$dst")"
  cp -L "$src" "$root/$dst"
  ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root/$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
add_bin /sbin/dmsetup /sbin/dmsetup
add_bin /sbin/lvm /sbin/lvm
for t in pvcreate pvremove pvs vgcreate vgremove vgchange vgs lvcreate lvremove lvs lvchange lvconvert lvextend lvdisplay vgscan pvscan lvscan; do
  ln -sf lvm "$root/sbin/$t"
done
add_bin /usr/bin/fio /usr/bin/fio
add_bin /sbin/mke2fs /sbin/mke2fs
ln -sf mke2fs "$root/sbin/mkfs.ext4"
add_bin /sbin/e2fsck /sbin/e2fsck
ln -sf e2fsck "$root/sbin/fsck.ext4"
add_bin /usr/bin/md5sum /usr/bin/coreutils-md5sum
add_bin /usr/bin/sha256sum /usr/bin/coreutils-sha256sum
add_bin /usr/bin/cksum /usr/bin/coreutils-cksum
add_bin /usr/bin/cmp /usr/bin/diffutils-cmp
# coreutils dd, not busybox's: busybox silently retries an O_DIRECT read
# without O_DIRECT when its unaligned buffer gets EINVAL, and would then read
# stale page cache of a device under a dm target. Its own name, because
# busybox sh runs its applets ahead of PATH.
add_bin /bin/dd /usr/bin/coreutils-dd
cargo build --release --quiet --manifest-path "$here/tools/log-writes-replay/Cargo.toml" && add_bin "$here/tools/log-writes-replay/target/release/log-writes-replay" /usr/bin/log-writes-replay
# The offline COW tool (tests/vm/dmsnap-*.sh, the demo). The crash test's
# scenario tree has no workspace and needs no dmsnap.
if [ -f "$here/Cargo.toml" ]; then
  cargo build --release --quiet --locked --manifest-path "$here/Cargo.toml" -p dmsnap && add_bin "$here/target/release/dmsnap" /usr/bin/dmsnap
fi
# fio and lvm dlopen a few libraries ldd does not list.
for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libaio.so.1t64 /lib/x86_64-linux-gnu/libaio.so.1; do
  [ -e "$lib" ] && { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
done

cat > "$root/etc/lvm/lvm.conf" <<'LVM'
devices {
  obtain_device_list_from_udev = 0
  external_device_info_source = "none"
  scan = [ "/dev" ]
}
activation {
  udev_sync = 0
  udev_rules = 0
  verify_udev_operations = 1
  monitoring = 0
  polling_interval = 1
}
global {
  use_lvmpolld = 0
  locking_type = 1
}
backup {
  backup = 0
  archive = 0
}
LVM
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

# Kernel modules: the reference dm-snapshot and the dm test targets.
for m in drivers/md/dm-bufio.ko drivers/md/dm-snapshot.ko drivers/md/dm-flakey.ko \
         drivers/md/dm-log-writes.ko drivers/md/dm-delay.ko; do
  [ -f "$kdir/$m" ] && cp "$kdir/$m" "$root/modules/"
done
cp "$ko" "$root/modules/dm-snapshot-rs.ko"

# A kernel with the block and dm core as modules (a distro kernel, see
# scripts/stock/vm-kernel.sh) lists them in $kdir/vm-base-modules: paths
# relative to KDIR (or absolute), in load order. /init insmods them, in the
# order of /modules/base/order, before any scenario. The project's kernels
# have these built in and no such file.
if [ -f "$kdir/vm-base-modules" ]; then
  mkdir -p "$root/modules/base"
  while read -r m; do
    case $m in ''|'#'*) continue ;; /*) ;; *) m=$kdir/$m ;; esac
    [ -f "$m" ] || { echo "mkinitramfs: $kdir/vm-base-modules: no $m" >&2; exit 1; }
    cp "$m" "$root/modules/base/"
    basename "$m" >> "$root/modules/base/order"
  done < "$kdir/vm-base-modules"
fi
# A module tree for modprobe (lib/modules/VERSION with depmod's files),
# copied over the guest's root, and its etc/modprobe.d if it has one (e.g.
# a DKMS package's aliases: scripts/stock/test-dkms.sh).
if [ -d "$kdir/vm-modroot/lib/modules" ]; then
  cp -a "$kdir/vm-modroot/lib/modules" "$root/lib/"
fi
if [ -d "$kdir/vm-modroot/etc/modprobe.d" ]; then
  mkdir -p "$root/etc"
  cp -a "$kdir/vm-modroot/etc/modprobe.d" "$root/etc/"
fi
# VM_KMOD=1: kmod's real modprobe (reads /etc/modprobe.d, .ko.xz) as
# /sbin/modprobe, the path the kernel's request_module() and LVM2 run;
# busybox's applets stay in /bin.
if [ -n "${VM_KMOD:-}" ]; then
  add_bin "$(command -v kmod)" /sbin/kmod
  for t in modprobe modinfo; do ln -sf kmod "$root/sbin/$t"; done
fi

cp "$here/scripts/vm/init" "$root/init"
chmod +x "$root/init"
cp "$here"/tests/vm/*.sh "$root/tests/"
cp "$here"/tests/leak/*.sh "$root/tests/"

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out"

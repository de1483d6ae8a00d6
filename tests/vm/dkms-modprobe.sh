# SPDX-License-Identifier: GPL-2.0
# The DKMS package on Debian's stock kernel, as installed on a user's system
# (scripts/stock/test-dkms.sh): /lib/modules/$(uname -r)/updates/dkms holds
# the DKMS-built dm-snapshot-rs, /etc/modprobe.d/dm-snapshot-rs.conf the
# package's aliases, /sbin/modprobe is kmod's. Nothing is insmodded here:
#  1. `modprobe dm-snapshot` loads dm_snapshot_rs (with dm_bufio), never the
#     kernel's dm_snapshot; the taint is at most O (out of tree) and E
#     (unsigned); so do `modprobe dm_snapshot` and dm-mod's own
#     request_module("dm-snapshot-merge") for a table naming the target.
#  2. an LVM rollback with the module unloaded first: LVM2 runs `modprobe
#     dm-snapshot` itself; lvconvert --merge, unmounted and deferred to the
#     next activation (mounted origin), data checked against the model.
#  3. the kernel log has no "Unknown symbol" nor "disagrees about version".
# shellcheck source=tests/vm/lib.sh
. /tests/lib.sh
export LVM_SUPPRESS_FD_WARNINGS=1
kver=$(uname -r)
info "kernel $kver, $(/sbin/modprobe --version | head -1)"
[ -f "/lib/modules/$kver/modules.dep" ] || fail "no modules.dep for $kver"
set -- "/lib/modules/$kver/updates/dkms/"dm-snapshot-rs.ko*
[ -e "$1" ] || fail "no updates/dkms/dm-snapshot-rs.ko*"
[ -f /etc/modprobe.d/dm-snapshot-rs.conf ] || fail "no /etc/modprobe.d/dm-snapshot-rs.conf"

only_rs() {
  grep -q "^$RS " /proc/modules || fail "$1: $RS not loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
  if grep -q "^$UPSTREAM " /proc/modules; then fail "$1: the kernel's $UPSTREAM was loaded"; fi
}
unload() { unload_modules; }

taint_ok() {
  t=$(cat /proc/sys/kernel/tainted)
  # O = bit 12 (4096), E = bit 13 (8192)
  [ $(( t & ~12288 )) = 0 ] || fail "taint $t has flags other than O/E"
  info "tainted=$t (O/E only)"
}

# --- 1. modprobe ---------------------------------------------------------
unload
grep -q '^dm_bufio ' /proc/modules && rmmod dm_bufio
/sbin/modprobe --show-depends dm-snapshot
/sbin/modprobe --show-depends dm-snapshot | grep -q '^install .*dm_snapshot_rs' ||
  fail "modprobe --show-depends dm-snapshot: no install rule for dm_snapshot_rs"
/sbin/modprobe dm-snapshot || fail "modprobe dm-snapshot"
only_rs "modprobe dm-snapshot"
grep -q '^dm_bufio ' /proc/modules || fail "dm_bufio not pulled in"
dmsetup targets | grep -q '^snapshot-merge ' || fail "no snapshot-merge target"
info "version $(cat "/sys/module/$RS/version" 2>/dev/null)"
taint_ok
unload
/sbin/modprobe dm_snapshot || fail "modprobe dm_snapshot"
only_rs "modprobe dm_snapshot"
unload
# A kernel DKMS did not build dm_snapshot_rs for (a fallback kernel without
# Rust): the install rule falls back to the kernel's dm_snapshot.
rs_ko=$1
mv "$rs_ko" /tmp/hidden-rs.ko
/sbin/modprobe dm-snapshot || fail "modprobe dm-snapshot with no dm_snapshot_rs for this kernel"
grep -q "^$UPSTREAM " /proc/modules || fail "no dm_snapshot_rs: the kernel's $UPSTREAM did not load"
if grep -q "^$RS " /proc/modules; then fail "$RS loaded although its file is gone"; fi
info "no dm_snapshot_rs for this kernel: modprobe dm-snapshot loaded the kernel's module"
mv /tmp/hidden-rs.ko "$rs_ko"
unload
# dm-mod's request_module("dm-snapshot-origin") for an unknown target
wipe_cow /dev/vdc
dmsetup create rq-origin --table "0 8192 snapshot-origin /dev/vdb" || fail "snapshot-origin table without the module loaded"
only_rs "request_module(dm-snapshot-origin)"
dmsetup remove rq-origin
unload

# --- 2. LVM rollback, the module loaded by LVM2 --------------------------
setup_fs() { lvm_root_setup 4 2; }
upgrade() {
  mount /dev/vg/root /mnt/root
  rm /mnt/root/etc/conf2 /mnt/root/usr/lib/lib1.so
  pattern new 2097152 > /mnt/root/usr/lib/lib2.so
  pattern added 1048576 > /mnt/root/usr/lib/libnew.so
  sync
  lvm_root_sum > /tmp/after
  if cmp -s /tmp/before /tmp/after; then fail "the upgrade changed nothing"; fi
}
check_rollback() {
  lvm_root_check "$1"
  info "$1: rollback complete, files identical"
}

info "case 1: LVM snapshot + merge, origin unmounted"
setup_fs
if grep -q "^$RS " /proc/modules; then fail "module loaded before LVM asked for it"; fi
lvmc lvcreate -y -s -L 48M -n pre vg/root /dev/vdc >/dev/null
only_rs "lvcreate -s (LVM2's modprobe dm-snapshot)"
upgrade
umount /mnt/root
lvmc lvconvert --merge -i 1 vg/pre
only_rs "lvconvert --merge"
check_rollback "unmounted"
lvmc vgremove -ff vg >/dev/null
unload

info "case 2: merge deferred (origin mounted), runs on the next activation"
setup_fs
lvmc lvcreate -y -s -L 48M -n pre vg/root /dev/vdc >/dev/null
upgrade
lvmc lvconvert --merge vg/pre 2>&1 | tee /tmp/lvc.out
grep -qi "next activation" /tmp/lvc.out || fail "merge was not deferred"
umount /mnt/root
lvmc vgchange -an vg >/dev/null
# As at boot in the initramfs: nothing loaded, LVM2 modprobes the target.
unload
lvmc vgchange -ay vg >/dev/null
only_rs "activation with a pending merge"
lvmc lvm lvpoll --polloperation merge -i 1 vg/root || true
n=0
while lvmc lvs --noheadings -o lv_name vg | grep -q pre; do
  n=$((n + 1)); [ $n -lt 120 ] || fail "merge on activation did not finish: $(dmsetup status)"
  sleep 1
done
check_rollback "deferred"
lvmc vgremove -ff vg >/dev/null
taint_ok
unload

# --- 3. kernel log ---------------------------------------------------------
if dmesg | grep -E 'Unknown symbol|disagrees about version'; then fail "symbol errors in the kernel log"; fi
dmesg | grep -i 'dm_snapshot_rs\|dm-snapshot-rs' | tail -5 || true
info "dkms-modprobe: ok"

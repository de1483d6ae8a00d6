# SPDX-License-Identifier: GPL-2.0
# LVM2 rollback end to end on the Rust module: ext4 on vg/root, a snapshot
# before the "upgrade", files changed and deleted, then lvconvert --merge.
#  1. origin unmounted: the merge starts at once, lvconvert polls it to the
#     end and removes the snapshot; the files are back exactly.
#  2. origin mounted: the merge is deferred; after vgchange -an/-ay it runs
#     on activation and completes; the files are back exactly.
. /tests/lib.sh
export LVM_SUPPRESS_FD_WARNINGS=1
setup_fs() { lvm_root_setup 6 3; }

upgrade() {
  mount /dev/vg/root /mnt/root
  rm /mnt/root/etc/conf2 /mnt/root/usr/lib/lib1.so
  pattern new 3145728 > /mnt/root/usr/lib/lib2.so
  pattern newcfg 8192 > /mnt/root/etc/conf5
  pattern added 2097152 > /mnt/root/usr/lib/libnew.so
  sync
  lvm_root_sum > /tmp/after
  if cmp -s /tmp/before /tmp/after; then fail "the upgrade changed nothing"; fi
}

check_rollback() {
  lvm_root_check "$1"
  lvmc lvs vg
  if dmsetup table | grep -q snapshot; then fail "$1: snapshot targets left: $(dmsetup table)"; fi
  info "$1: rollback complete, files identical"
}

load_module rs

info "case 1: merge with the origin unmounted"
setup_fs
lvmc lvcreate -y -s -L 48M -n pre vg/root /dev/vdc >/dev/null
upgrade
umount /mnt/root
lvmc lvconvert --merge -i 1 vg/pre
check_rollback "unmounted"
lvmc vgremove -ff vg >/dev/null

info "case 2: merge with the origin mounted (deferred to the next activation)"
setup_fs
lvmc lvcreate -y -s -L 48M -n pre vg/root /dev/vdc >/dev/null
upgrade
lvmc lvconvert --merge vg/pre 2>&1 | tee /tmp/lvc.out
grep -qi "next activation" /tmp/lvc.out || fail "merge was not deferred"
if dmsetup table | grep -q snapshot-merge; then fail "merge started while mounted"; fi
umount /mnt/root
lvmc vgchange -an vg >/dev/null
lvmc vgchange -ay vg >/dev/null
# The merge starts on activation: either it is still running, or vgchange's
# background poller already saw it finish (a batched merge of a small COW
# takes well under a second) and removed the snapshot; check_rollback below
# then proves the data was merged.
if ! dmsetup table vg-root | grep -q snapshot-merge; then
  if lvmc lvs --noheadings -o lv_name vg | grep -q pre; then
    fail "merge did not start on activation: $(dmsetup table)"
  fi
  info "merge on activation already finished"
fi
# Poll it to completion (no lvmpolld here; vgchange may also have started a
# background poller, so lvpoll may find the merge already finished).
lvmc lvm lvpoll --polloperation merge -i 1 vg/root || true
n=0
while lvmc lvs --noheadings -o lv_name vg | grep -q pre; do
  n=$((n + 1)); [ $n -lt 120 ] || fail "merge on activation did not finish: $(dmsetup status)"
  sleep 1
done
check_rollback "mounted"
lvmc vgremove -ff vg >/dev/null
unload_modules

# SPDX-License-Identifier: GPL-2.0
# LVM2's test/shell/snapshot-merge-stack.sh, step by step, on both modules:
# the PVs are dm linear devices (as in LVM2's test harness), ext3 on the
# snapshot, a background lvconvert --merge deferred by an open origin; then
# the origin's PV delays writes by 200 ms, `lvchange --refresh` starts the
# merge, the COW's PV fails while it runs: both LVs must report "merge
# failed" (lv_attr state 'm'), never an invalid snapshot. With the COW's PV
# back, a reactivation finishes the merge and the origin holds the ext3
# made on the snapshot (fsck clean, same files).
#
# LVM2's test, and so this one, needs the merge to be still running about
# 1.5 s after it starts: with 200 ms origin writes upstream takes ~12 s
# for this COW (8 MiB, one run per copy, flush and commit) and this module
# ~4.5 s. A bounce copier with four requests in flight (session 10)
# finished in ~1 s and failed here, as it would fail LVM2's test.
. /tests/lib.sh
export LVM_SUPPRESS_FD_WARNINGS=1
CFG='devices { filter = [ "a|^/dev/mapper/pv[12]$|", "r|.*|" ] obtain_device_list_from_udev = 0 } activation { polling_interval = 1 udev_sync = 0 udev_rules = 0 }'
lvmc() { "$@" --config "$CFG"; }

# table_pv NAME DEV [delay|error]: (re)load PV NAME over DEV, the part from
# its first extent on plain, write-delayed by 200 ms or failing.
table_pv() {
  local name=$1 dev=$2 kind=${3:-linear} size rest
  size=$(sectors "$dev")
  rest=$((size - PE))
  {
    echo "0 $PE linear $dev 0"
    case $kind in
      linear) echo "$PE $rest linear $dev $PE" ;;
      delay) echo "$PE $rest delay $dev $PE 0 $dev $PE 200" ;;
      error) echo "$PE $rest error" ;;
    esac
  } > /tmp/$name.table
  if dmsetup info "$name" >/dev/null 2>&1; then
    dmsetup load "$name" /tmp/$name.table
    dmsetup resume "$name"
  else
    dmsetup create "$name" /tmp/$name.table
  fi
}

# files_sum: checksums of the files under /mnt/s.
files_sum() { ( cd /mnt/s && for f in f1 f2 f3; do echo "$(sum_file $f) $f"; done ); }

# state LV: lv_attr's state letter (a active, m merge failed, I invalid, ...).
state() { lvmc lvs --noheadings -o lv_attr "vg/$1" | tr -d ' ' | cut -c5; }

run_case() {
  M=$1
  load_module "$M"
  grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
  for d in /dev/vda /dev/vdc; do $DD if=/dev/zero of=$d bs=1M count=4 oflag=direct 2>/dev/null; done
  PE=2048
  table_pv pv1 /dev/vda
  table_pv pv2 /dev/vdc
  lvmc pvcreate -y -ff /dev/mapper/pv1 /dev/mapper/pv2 >/dev/null
  PE=$(lvmc pvs --noheadings --units s --nosuffix -o pe_start /dev/mapper/pv1 | tr -d ' ')
  lvmc vgcreate vg /dev/mapper/pv1 /dev/mapper/pv2 >/dev/null
  lvmc lvcreate -y -L 52M -n lv1 vg /dev/mapper/pv1 >/dev/null
  lvmc lvcreate -y -s -n lv2 -L 20M vg/lv1 /dev/mapper/pv2 >/dev/null
  /sbin/mke2fs -q -F -t ext3 /dev/vg/lv2
  sync
  mkdir -p /mnt/s
  mount -t ext4 /dev/vg/lv2 /mnt/s
  for i in 1 2 3; do pattern "stack$i" $((i * 65536)) > /mnt/s/f$i; done
  files_sum > /tmp/$M.files
  umount /mnt/s

  # The open origin defers the merge to its next activation.
  sleep 20 < /dev/vg/lv1 &
  hold=$!
  lvmc lvconvert -b --merge vg/lv2 >/dev/null
  lvmc lvs --noheadings -o lv_attr vg/lv1 | grep -q "Owi-ao" || fail "$M: origin attrs $(lvmc lvs -o lv_attr vg/lv1)"
  lvmc lvs --noheadings -o lv_attr vg/lv2 | grep -q "Swi-a-s---" || fail "$M: snapshot attrs $(lvmc lvs -o lv_attr vg/lv2)"
  kill $hold; wait $hold 2>/dev/null || true

  table_pv pv1 /dev/vda delay
  lvmc lvchange --poll n --refresh vg/lv1
  info "$M: merging: $(dmsetup status vg-lv1)"
  sleep 1
  [ "$(state lv2)" = a ] || fail "$M: snapshot state $(state lv2) while merging"
  info "$M: before the COW fails: $(dmsetup status vg-lv1)"
  table_pv pv2 /dev/vdc error
  table_pv pv1 /dev/vda
  sleep 1
  sync
  info "$M: COW failed: $(dmsetup status vg-lv1)"
  [ "$(state lv1)" = m ] || fail "$M: origin state '$(state lv1)' after the COW failed (want m): $(dmsetup status vg-lv1)"
  [ "$(state lv2)" = m ] || fail "$M: snapshot state '$(state lv2)' after the COW failed (want m)"

  # COW back: a reactivation restarts the merge from what is on disk.
  table_pv pv2 /dev/vdc
  lvmc lvchange -an vg
  lvmc lvchange -ay vg
  lvmc lvm lvpoll --polloperation merge -i 1 vg/lv1 >/dev/null 2>&1 || true
  n=0
  while lvmc lvs --noheadings -o lv_name vg | grep -q lv2; do
    n=$((n + 1)); [ $n -lt 60 ] || fail "$M: merge after reactivation did not finish: $(dmsetup status)"
    sleep 1
  done
  /sbin/e2fsck -fn /dev/vg/lv1 >/dev/null || fail "$M: fsck errors on the merged origin"
  mount -t ext4 -o ro /dev/vg/lv1 /mnt/s
  files_sum > /tmp/$M.now
  umount /mnt/s
  cmp /tmp/$M.files /tmp/$M.now || fail "$M: merged origin's files differ from the snapshot's"
  info "$M: merge failed on the COW error, finished after reactivation, files identical"
  lvmc vgremove -ff vg >/dev/null
  dmsetup remove pv1; dmsetup remove pv2
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
for impl in $mods; do run_case $impl; done

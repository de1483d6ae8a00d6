# SPDX-License-Identifier: GPL-2.0
# LVM2 end to end on the snapshot targets: lvcreate -s (4K and -c 64k),
# origin writes, snapshot contents against a model, lvs Data% against the
# persistent-store arithmetic, lvextend of a snapshot, vgchange -an/-ay keeps
# the exceptions, lvremove. dm tables/status and lvs output are compared.
. /tests/lib.sh
export LVM_SUPPRESS_FD_WARNINGS=1
# Scan only the test disks; no udev in the guest.
CFG='devices { filter = [ "a|^/dev/vd[ac]$|", "r|.*|" ] obtain_device_list_from_udev = 0 }'
lvmc() { "$@" --config "$CFG"; }
C=4096
# Regions of vg/lv (128 MiB) touched below.
WINDOWS="0:$((1 << 20)) $((32 << 20)):$((512 << 10)) $(((128 << 20) - (256 << 10))):$((256 << 10))"

# pct LV: lvs Data% of vg/LV (e.g. 0.81)
pct() { lvmc lvs --noheadings -o data_percent vg/$1 | tr -d ' '; }

# want_pct USED_SECTORS TOTAL_SECTORS: LVM's percentage, two decimals.
want_pct() { awk -v u="$1" -v t="$2" 'BEGIN { printf "%.2f", 100 * u / t }'; }

snapshot_state() {  # $1 = label: record dm tables, statuses and lvs
  record $M.lvm "$1 tables" "$(dmsetup table | sort | tr '\n' ';')"
  record $M.lvm "$1 status" "$(dmsetup status | sort | tr '\n' ';')"
  record $M.lvm "$1 lvs" "$(lvmc lvs --noheadings -o lv_name,lv_attr,lv_size,origin,data_percent,chunk_size vg | tr -s ' ' | tr '\n' ';')"
}

run_case() {
  M=$1
  : > /tmp/$M.lvm
  load_module "$M"
  for d in /dev/vda /dev/vdc; do $DD if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null; done
  lvmc pvcreate -y -ff /dev/vda /dev/vdc >/dev/null
  lvmc vgcreate vg /dev/vda /dev/vdc >/dev/null
  lvmc lvcreate -y -L 128M -n lv vg /dev/vda >/dev/null
  model_fill /dev/vg/lv mo 100
  model_copy mo ms

  info "$M: lvcreate -s (default 4K chunks)"
  lvmc lvcreate -y -s -L 32M -n snap vg/lv /dev/vdc >/dev/null
  snapshot_state created
  expect_eq "snap table" "$(dmsetup table vg-snap | cut -d' ' -f3,6,7)" "snapshot P 8"
  expect_eq "origin table" "$(dmsetup table vg-lv | cut -d' ' -f3)" "snapshot-origin"
  expect_eq "fresh Data%" "$(pct snap)" "0.00"
  # 64 chunks through the origin: COW holds header + area + 64 chunks.
  mwrite /dev/vg/lv mo 0 $((64 * C)) 200
  used=$(( (2 + 64) * 8 ))
  expect_eq "status" "$(dmsetup status vg-snap)" "0 262144 snapshot $used/65536 16"
  expect_eq "Data% after 64 chunks" "$(pct snap)" "$(want_pct $used 65536)"
  model_check "$M snap" /dev/vg/snap ms
  model_check "$M origin" /dev/vg/lv mo

  info "$M: lvcreate -s -c 64k"
  model_copy mo ms64
  lvmc lvcreate -y -s -L 32M -c 64k -n snap64 vg/lv /dev/vdc >/dev/null
  expect_eq "snap64 table" "$(dmsetup table vg-snap64 | cut -d' ' -f3,6,7)" "snapshot P 128"
  mwrite /dev/vg/lv mo $((32 << 20)) $((256 << 10)) 300    # 4 x 64K, 64 x 4K
  mwrite /dev/vg/lv mo $((128 << 10)) 4096 301             # copied in snap already
  mwrite /dev/vg/lv mo $(((128 << 20) - 512)) 512 302      # last sector
  mwrite /dev/vg/snap ms $((32 << 20)) 8192 303            # snapshot write
  snapshot_state written
  # snap: 64 + 64 + 0 + 1 + 0 (the snapshot write hits copied chunks) = 129.
  expect_eq "snap status" "$(dmsetup status vg-snap)" "0 262144 snapshot $(( (2 + 129) * 8 ))/65536 16"
  # snap64: 4 + 1 (chunk 8 of 64K) + 1 = 6 chunks of 128 sectors.
  expect_eq "snap64 status" "$(dmsetup status vg-snap64)" "0 262144 snapshot $(( (2 + 6) * 128 ))/65536 256"
  expect_eq "snap64 Data%" "$(pct snap64)" "$(want_pct $(( 8 * 128 )) 65536)"
  model_check "$M snap" /dev/vg/snap ms
  model_check "$M snap64" /dev/vg/snap64 ms64
  model_check "$M origin" /dev/vg/lv mo

  info "$M: lvextend of the snapshot"
  lvmc lvextend -y -L +16M vg/snap >/dev/null
  expect_eq "status after lvextend" "$(dmsetup status vg-snap)" "0 262144 snapshot $(( (2 + 129) * 8 ))/98304 16"
  expect_eq "Data% after lvextend" "$(pct snap)" "$(want_pct $(( (2 + 129) * 8 )) 98304)"
  snapshot_state extended
  model_check "$M snap extended" /dev/vg/snap ms

  info "$M: vgchange -an / -ay"
  lvmc vgchange -an vg >/dev/null
  [ -z "$(dmsetup ls | grep '^vg-')" ] || { dmsetup ls; fail "vg still active"; }
  lvmc vgchange -ay vg >/dev/null
  snapshot_state reactivated
  expect_eq "status after reactivation" "$(dmsetup status vg-snap)" "0 262144 snapshot $(( (2 + 129) * 8 ))/98304 16"
  model_check "$M snap reactivated" /dev/vg/snap ms
  model_check "$M snap64 reactivated" /dev/vg/snap64 ms64
  model_check "$M origin reactivated" /dev/vg/lv mo
  mwrite /dev/vg/lv mo $((100 << 10)) 4096 400             # copy after reactivation
  model_check "$M snap after write" /dev/vg/snap ms
  model_check "$M snap64 after write" /dev/vg/snap64 ms64

  info "$M: lvremove"
  lvmc lvremove -y vg/snap64 >/dev/null
  lvmc lvremove -y vg/snap >/dev/null
  expect_eq "origin table after lvremove" "$(dmsetup table vg-lv | cut -d' ' -f3)" "linear"
  model_check "$M origin after lvremove" /dev/vg/lv mo
  snapshot_state removed
  lvmc vgremove -y -f vg >/dev/null
  lvmc pvremove -y /dev/vda /dev/vdc >/dev/null
  [ -z "$(dmsetup ls | grep '^vg-')" ] || { dmsetup ls; fail "dm devices left"; }
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" lvm

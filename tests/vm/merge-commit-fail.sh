# SPDX-License-Identifier: GPL-2.0
# A merge commit that fails partway (issue 17 item 7): the merge copies a
# batch spanning three metadata areas back to the origin, then shrinks the
# on-disk list; the write of the middle area fails (dm-flakey under that
# one chunk of the COW) while the others land. Writes to the batch's chunks
# after the failure must survive the next activation, whichever entries it
# finds: the on-disk list and the in-memory table no longer agree. Runs on
# upstream's module and this one; the final origin is checked against a
# model (the snapshot image plus those writes) on both.
. /tests/lib.sh
SZ=65536              # 32 MiB origin
CHUNKS=600            # exceptions: areas 0 and 1 full (256 each), area 2 88
# 4 KiB chunks: chunk 0 header, area k at chunk 1 + 257 k.
AREA1=$(( (1 + 257) * 8 ))
cow_table() {  # cow_table linear|flakey
  if [ "$1" = flakey ]; then
    printf '0 %d linear /dev/vdc 0\n%d 8 flakey /dev/vdc %d 0 3600 1 error_writes\n%d %d linear /dev/vdc %d\n' \
      $AREA1 $AREA1 $AREA1 $((AREA1 + 8)) $((SZ - AREA1 - 8)) $((AREA1 + 8))
  else
    echo "0 $SZ linear /dev/vdc 0"
  fi
}
run_case() {
  m=$1
  load_module "$m"
  grep -q '^dm_flakey ' /proc/modules || insmod /modules/dm-flakey.ko
  wipe_cow /dev/vdc
  dmsetup create real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/real orig 32
  cow_table linear | dmsetup create cow
  dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup create base --table "0 $SZ snapshot-origin /dev/mapper/real"
  # 600 consecutive chunks copied out, in allocation order.
  pattern upgrade $(( CHUNKS * 4096 )) > /tmp/u
  write_at /dev/mapper/base 0 /tmp/u
  read_at /dev/mapper/snap 0 $(( SZ * 512 )) > /tmp/model
  set -- $(dmsetup status snap)
  info "$m: before the merge: $4 $5"

  # From now on the write of area 1 fails; everything else works.
  dmsetup suspend cow; cow_table flakey | dmsetup load cow; dmsetup resume cow
  dmsetup suspend base; dmsetup suspend snap
  dmsetup load base --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup load snap --table "0 $SZ error"
  dmsetup resume base; dmsetup resume snap
  n=0
  until dmsetup status base | grep -q 'Merge failed'; do
    n=$((n + 1)); [ $n -lt 600 ] || fail "$m: merge did not fail: $(dmsetup status base)"
    sleep 0.1
  done
  info "$m: $(dmsetup status base)"
  # Writes to chunks of every area (the copied-back batch), and to a
  # chunk that never had an exception.
  for c in 5 300 550 601; do
    gen "late$c" 4096 > /tmp/late
    $DD if=/tmp/late of=/dev/mapper/base bs=4096 seek=$c oflag=direct conv=notrunc 2>/dev/null \
      || fail "$m: write to chunk $c after the failure"
    patch_file /tmp/model $(( c * 4096 )) /tmp/late
  done
  expect_eq "$m: the merging device after the failure" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$(sum_file /tmp/model)"
  # The COW works again and the merging device is suspended and resumed:
  # nothing may change. Upstream restarts the failed merge there from the
  # in-memory area it had already cleared and copies chunk 0 of the COW
  # over the origin ("Corruption detected: exception for block 0 is on
  # disk but not in memory"), so this step runs on this module only: it
  # waits for the next activation instead.
  dmsetup suspend cow; cow_table linear | dmsetup load cow; dmsetup resume cow
  if [ "$m" = rs ]; then
    dmsetup suspend base; dmsetup resume base
    sleep 2
    info "$m: after a resume: $(dmsetup status base)"
    expect_eq "$m: the merging device after a resume" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$(sum_file /tmp/model)"
  fi

  # Next activation, as LVM does it: snapshot-merge on a working COW.
  dmsetup remove base; dmsetup remove snap
  dmsetup create base --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow P 8"
  wait_merged base
  expect_eq "$m: origin after the merge resumed" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$(sum_file /tmp/model)"
  dmsetup remove base
  expect_eq "$m: real device" "$(sum_at /dev/mapper/real 0 $(( SZ * 512 )))" "$(sum_file /tmp/model)"
  dmsetup remove cow; dmsetup remove real
  rmmod dm_flakey
  unload_modules
}
run_case upstream
run_case rs

# SPDX-License-Identifier: GPL-2.0
# I/O errors on the COW (dm-flakey): the copy-out or metadata write fails,
# the snapshot is invalidated with an event, the origin write still lands,
# no bio hangs, and the status sequence matches upstream's.
. /tests/lib.sh
run_case() {
  m=$1
  load_module "$m"
  grep -q '^dm_flakey ' /proc/modules || insmod /modules/dm-flakey.ko
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  dmsetup create real --table "0 65536 linear /dev/vda 0"
  dmsetup create cow --table "0 65536 flakey /dev/vdc 0 3600 0"
  dmsetup create snap --table "0 65536 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup create origin --table "0 65536 snapshot-origin /dev/mapper/real"
  pattern err1 65536 > /tmp/a; write_at /dev/mapper/origin 0 /tmp/a
  dmsetup status snap > /tmp/$m.st
  ev0=$(dmsetup info -c --noheadings -o events snap)
  # From now on every write to the COW fails.
  dmsetup suspend cow
  dmsetup load cow --table "0 65536 flakey /dev/vdc 0 0 3600 1 error_writes"
  dmsetup resume cow
  pattern err2 65536 > /tmp/b
  write_at /dev/mapper/origin 1048576 /tmp/b
  expect_eq "$m: origin write landed" "$(sum_at /dev/mapper/real 1048576 65536)" "$(sum_file /tmp/b)"
  dmsetup status snap >> /tmp/$m.st
  ev1=$(dmsetup info -c --noheadings -o events snap)
  [ "$ev1" -gt "$ev0" ] || fail "$m: no table event on invalidation"
  if read_fails /dev/mapper/snap 0 4096; then :; else fail "$m: invalid snapshot still readable"; fi
  # Later origin writes skip the invalid snapshot and still work.
  pattern err3 4096 > /tmp/c; write_at /dev/mapper/origin 2097152 /tmp/c
  expect_eq "$m: later origin write" "$(sum_at /dev/mapper/origin 2097152 4096)" "$(sum_file /tmp/c)"
  dmsetup status snap >> /tmp/$m.st
  dmsetup remove origin; dmsetup remove snap; dmsetup remove cow; dmsetup remove real
  rmmod dm_flakey
  unload_modules
  cat /tmp/$m.st
}
run_case upstream
run_case rs
cmp /tmp/upstream.st /tmp/rs.st || fail "status sequence differs from upstream"

# SPDX-License-Identifier: GPL-2.0
# Merge cases beyond merge-basic, on both modules where they are
# deterministic:
#  a. two other snapshots of the origin stay stable through the merge;
#     512K chunks; status sequence compared with upstream;
#  b. an empty COW merges at once;
#  c. suspend/resume in the middle of a (throttled) merge;
#  d. fio with verification on the merging device during the whole merge;
#  e. the merging snapshot is invalidated: I/O goes to the origin.
. /tests/lib.sh
SZ=65536          # 32 MiB origin

# setup M CHUNK: base-real filled, snapshots s0 (to merge) and s1, s2.
setup() {
  load_module "$1"
  for i in 0 1 2; do $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$(( i * 4096 )) oflag=direct 2>/dev/null; done
  dmsetup create base-real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/base-real fill 32
  for i in 0 1 2; do
    dmsetup create cow$i --table "0 32768 linear /dev/vdc $(( i * 32768 ))"
  done
  dmsetup create s0 --table "0 $SZ snapshot /dev/mapper/base-real /dev/mapper/cow0 P $2"
  dmsetup create base --table "0 $SZ snapshot-origin /dev/mapper/base-real"
}

start_merge() {  # CHUNK
  dmsetup suspend base; dmsetup suspend s0
  dmsetup load base --table "0 $SZ snapshot-merge /dev/mapper/base-real /dev/mapper/cow0 P $1"
  dmsetup load s0 --table "0 $SZ error"
  dmsetup resume base; dmsetup resume s0
}

teardown() {
  for d in base s0 s1 s2 cow0 cow1 cow2 base-real; do dmsetup remove $d 2>/dev/null || true; done
  unload_modules
}

param() { echo /sys/module/$( [ "$1" = rs ] && echo $RS || echo $UPSTREAM )/parameters/$2; }

case_a() {  # other snapshots stable, 512K chunks
  m=$1
  setup $m 1024
  pattern up1 262144 > /tmp/u
  write_at /dev/mapper/base 0 /tmp/u
  write_at /dev/mapper/base 8388608 /tmp/u
  # Two more snapshots of the changed origin, 4K and 64K chunks.
  dmsetup suspend base
  dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/base-real /dev/mapper/cow1 P 8"
  dmsetup create s2 --table "0 $SZ snapshot /dev/mapper/base-real /dev/mapper/cow2 P 128"
  dmsetup resume base
  s1sum=$(sum_at /dev/mapper/s1 0 $(( SZ * 512 ))); s2sum=$(sum_at /dev/mapper/s2 0 $(( SZ * 512 )))
  write_at /dev/mapper/base 16777216 /tmp/u
  s0sum=$(sum_at /dev/mapper/s0 0 $(( SZ * 512 )))
  start_merge 1024
  wait_merged base
  dmsetup status base > /tmp/$m.a
  expect_eq "$m a: origin = merged snapshot" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$s0sum"
  expect_eq "$m a: s1 stable" "$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))" "$s1sum"
  expect_eq "$m a: s2 stable" "$(sum_at /dev/mapper/s2 0 $(( SZ * 512 )))" "$s2sum"
  dmsetup status s1 >> /tmp/$m.a; dmsetup status s2 >> /tmp/$m.a
  teardown
}

case_b() {  # empty COW
  m=$1
  setup $m 8
  sum=$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))
  start_merge 8
  wait_merged base
  dmsetup status base > /tmp/$m.b
  expect_eq "$m b: origin unchanged" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$sum"
  teardown
}

case_c() {  # suspend/resume mid-merge
  m=$1
  setup $m 8
  pattern up3 4194304 > /tmp/u
  write_at /dev/mapper/base 0 /tmp/u; write_at /dev/mapper/base 16777216 /tmp/u
  s0sum=$(sum_at /dev/mapper/s0 0 $(( SZ * 512 )))
  echo 1 > $(param $m snapshot_copy_throttle)
  start_merge 8
  sleep 1
  dmsetup suspend base
  set -- $(dmsetup status base); mid=${4%%/*}
  sleep 1
  set -- $(dmsetup status base)
  expect_eq "$m c: no progress while suspended" "${4%%/*}" "$mid"
  echo 100 > $(param $m snapshot_copy_throttle)
  dmsetup resume base
  wait_merged base
  expect_eq "$m c: origin = snapshot after resume" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$s0sum"
  teardown
}

case_d() {  # fio verify on the merging device during the merge
  m=$1
  setup $m 16
  pattern up4 2097152 > /tmp/u
  write_at /dev/mapper/base 0 /tmp/u; write_at /dev/mapper/base 16777216 /tmp/u
  echo 20 > $(param $m snapshot_copy_throttle)
  start_merge 16
  fio --name=v --filename=/dev/mapper/base --rw=randwrite --bs=4k --size=16m --offset=8m \
      --direct=1 --ioengine=psync --verify=crc32c --do_verify=1 --randseed=7 \
      --output=/tmp/fio.out >/dev/null || { cat /tmp/fio.out; fail "$m d: fio verify failed during the merge"; }
  set -- $(dmsetup status base)
  echo "$m d: fio done at $4 $5"
  echo 100 > $(param $m snapshot_copy_throttle)
  wait_merged base
  # After the merge the fio region still verifies.
  fio --name=v --filename=/dev/mapper/base --rw=randwrite --bs=4k --size=16m --offset=8m \
      --direct=1 --ioengine=psync --verify=crc32c --verify_only --randseed=7 \
      --output=/tmp/fio2.out >/dev/null || { cat /tmp/fio2.out; fail "$m d: data lost by the merge"; }
  teardown
}

case_e() {  # merging snapshot invalidated: COW full before the merge
  m=$1
  load_module $m
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  dmsetup create base-real --table "0 $SZ linear /dev/vda 0"
  dmsetup create cow0 --table "0 200 linear /dev/vdc 0"
  dmsetup create s0 --table "0 $SZ snapshot /dev/mapper/base-real /dev/mapper/cow0 P 8"
  dmsetup create base --table "0 $SZ snapshot-origin /dev/mapper/base-real"
  pattern up5 1048576 > /tmp/u
  write_at /dev/mapper/base 0 /tmp/u
  expect_eq "$m e: invalid" "$(dmsetup status s0 | cut -d' ' -f4)" "Invalid"
  sum=$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))
  start_merge 8
  sleep 1
  dmsetup status base > /tmp/$m.e
  expect_eq "$m e: I/O goes to the origin" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$sum"
  pattern up6 4096 > /tmp/w; write_at /dev/mapper/base 4194304 /tmp/w
  expect_eq "$m e: writes reach the origin" "$(sum_at /dev/mapper/base-real 4194304 4096)" "$(sum_file /tmp/w)"
  teardown
}

for m in upstream rs; do
  for c in a b c d e; do info "$m: case $c"; case_$c $m; done
done
for c in a b e; do
  cmp /tmp/upstream.$c /tmp/rs.$c || { cat /tmp/upstream.$c /tmp/rs.$c; fail "case $c: status differs from upstream"; }
done

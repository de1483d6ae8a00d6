# SPDX-License-Identifier: GPL-2.0
# Removing snapshots while the origin is busy (LVM's lvremove: suspend the
# origin, drop the snapshot, resume): fio keeps writing and verifying the
# origin the whole time, the remaining snapshot keeps its image, and the
# module unloads afterwards. Both modules.
. /tests/lib.sh
SZ=131072   # 64 MiB
run_case() {
  m=$1
  load_module "$m"
  for i in 0 1; do $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$(( i * 8192 )) oflag=direct 2>/dev/null; done
  dmsetup create real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/real busy 64
  dmsetup create cow0 --table "0 65536 linear /dev/vdc 0"
  dmsetup create cow1 --table "0 65536 linear /dev/vdc 65536"
  dmsetup create s0 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow0 P 8"
  dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow1 P 32"
  dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
  s1sum=$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))
  fio --name=busy --filename=/dev/mapper/origin --rw=randwrite --bs=4k --size=24m --offset=8m \
      --direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 --randseed=11 \
      --output=/tmp/fio.$m >/dev/null 2>&1 &
  fpid=$!
  sleep 2
  # lvremove of s0 with the origin busy.
  dmsetup suspend origin
  dmsetup remove s0
  dmsetup resume origin
  sleep 1
  # Again, removing and re-creating a snapshot table on s1's COW.
  dmsetup suspend origin; dmsetup suspend s1
  dmsetup remove s1
  dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow1 P 32"
  dmsetup resume origin
  wait $fpid || { cat /tmp/fio.$m; fail "$m: fio verify failed"; }
  expect_eq "$m: remaining snapshot keeps its image" "$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))" "$s1sum"
  dmsetup remove origin; dmsetup remove s1; dmsetup remove cow0; dmsetup remove cow1; dmsetup remove real
  unload_modules
  info "$m: ok"
}
run_case upstream
run_case rs

# SPDX-License-Identifier: GPL-2.0
# snapshot-origin with no snapshots: pass-through I/O, and table and status
# lines identical to upstream's. Runs the same steps on both modules.
. /tests/lib.sh
dev=/dev/vda
size=$(sectors $dev)
nr=$(devno $dev)

run_steps() {  # $1 = module; leaves table/status in /tmp/$1.*
  load_module "$1"
  dmsetup create origin --table "0 $size snapshot-origin $dev"
  dmsetup table origin > /tmp/$1.table
  dmsetup status origin > /tmp/$1.status
  # A partial-length origin is legal too.
  dmsetup create origin2 --table "0 $(( size / 2 )) snapshot-origin $dev"
  dmsetup table origin2 >> /tmp/$1.table
  dmsetup status origin2 >> /tmp/$1.status
  dmsetup remove origin2

  # Data written through the origin lands on the device unchanged, at any
  # alignment, and reads through the origin return it.
  info "$1: patterned writes"
  i=0
  for spec in 0:4096 4096:65536 1536:512 1048064:8192 268435456:1048576 $(( size * 512 - 4096 )):4096; do
    off=${spec%%:*} len=${spec##*:}
    pattern "$1$i" "$len" > /tmp/chunk
    write_at /dev/mapper/origin "$off" /tmp/chunk
    expect_eq "device data at $off" "$(sum_at $dev "$off" "$len")" "$(sum_file /tmp/chunk)"
    expect_eq "origin read at $off" "$(sum_at /dev/mapper/origin "$off" "$len")" "$(sum_file /tmp/chunk)"
    i=$((i + 1))
  done
  expect_eq "whole device via origin" "$(sum_dev /dev/mapper/origin)" "$(sum_dev $dev)"

  info "$1: fio verify"
  # fio with verification through the origin.
  fio --name=verify --filename=/dev/mapper/origin --rw=randwrite --bs=4k --size=64m \
      --offset=256m --direct=1 --ioengine=psync --verify=crc32c --do_verify=1 \
      --randseed=42 --output=/tmp/fio.out >/dev/null || { cat /tmp/fio.out; fail "fio verify"; }

  info "$1: flush, suspend, reload"
  # Flushes pass through.
  $DD if=/dev/zero of=/dev/mapper/origin bs=4096 count=1 seek=10 oflag=direct,sync 2>/dev/null || fail "sync write"
  sync

  # Suspend and resume keep working; reload with the same table is accepted.
  dmsetup suspend origin && dmsetup resume origin
  dmsetup reload origin --table "0 $size snapshot-origin $dev" && dmsetup resume origin
  dmsetup table origin >> /tmp/$1.table

  dmsetup remove origin
  unload_modules
}

run_steps upstream
run_steps rs
cat /tmp/rs.table /tmp/rs.status
expect_eq "table line" "$(head -1 /tmp/rs.table)" "0 $size snapshot-origin $nr"
cmp /tmp/upstream.table /tmp/rs.table || fail "table lines differ from upstream"
cmp /tmp/upstream.status /tmp/rs.status || fail "status lines differ from upstream"

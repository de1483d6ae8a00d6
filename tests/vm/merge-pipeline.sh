# SPDX-License-Identifier: GPL-2.0
# A merge long enough for full-size batches (up to 16 MiB, spanning 16
# metadata areas) and for the pipeline (batch i + 1 copied while batch i's
# origin flush runs, both in the window), with writes to the merging device
# meanwhile. The merge pipelines only while no write waits for it; the
# test-kernel parameter test_merge_pipeline makes it pipeline always, so
# that these writes meet two batches in the window.
# 96 MiB origin, 4 KiB chunks: the COW holds 24576 exceptions in 96 areas,
# filled mostly sequentially. While the merge runs, 4 KiB writes of
# distinct patterns go to distinct ranges, each read back afterwards.
# Whether each lands before or after its chunk is merged, the result is the
# snapshot image with those writes applied, which the test builds as a file
# and compares with the origin, on both modules.
. /tests/lib.sh
MB=96
SZ=$(( MB * 2048 ))
NWR=8

run_case() {
  local m=$1
  shift
  load_module "$m" "$@"
  if [ $m = rs ]; then
    [ "$(cat /sys/module/dm_snapshot_rs/parameters/test_merge_pipeline 2>/dev/null)" = Y ] ||
      fail "test_merge_pipeline is not set (a CONFIG_KUNIT kernel is needed)"
  fi
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  dmsetup create base-real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/base-real orig $MB
  dmsetup create base-cow --table "0 $(( SZ + SZ / 64 + 8192 )) linear /dev/vdc 0"
  dmsetup create snap --table "0 $SZ snapshot /dev/mapper/base-real /dev/mapper/base-cow P 8"
  dmsetup create base --table "0 $SZ snapshot-origin /dev/mapper/base-real"
  # Snapshot writes first (their chunks take the first COW chunks), then
  # every other chunk is copied out in order: runs of several lengths.
  for off in 4096 1048576 33566720 67108864 100597760; do
    pattern "snap$off" 65536 > /tmp/sw; write_at /dev/mapper/snap $off /tmp/sw
  done
  fill_mib /dev/mapper/base upgrade $MB
  read_at /dev/mapper/snap 0 $(( SZ * 512 )) > /tmp/model
  st=$(dmsetup status snap); set -- $st
  info "$m: snapshot status before the merge: $st"

  # Writers start while the device is suspended (their first writes wait
  # for the resume): NWR processes, each writing a 1 MiB range as 256
  # direct 4 KiB writes, then reading it back (a write released before its
  # chunk is merged would read back the COW's data). The ranges are
  # distinct MiBs of the top three quarters: the merge starts at the top
  # (the newest exceptions).
  awk -v n=$NWR -v mb=$MB 'BEGIN { srand(11); while (c < n) { o = int(mb / 4 + rand() * mb * 3 / 4); if (!(o in s)) { s[o] = 1; print o; c++ } } }' > /tmp/ranges
  rm -f /tmp/wfail
  dmsetup suspend base; dmsetup suspend snap
  pids=
  w=0
  for o in $(cat /tmp/ranges); do
    pattern "w$w" 1048576 > /tmp/pw$w
    (
      $DD if=/tmp/pw$w of=/dev/mapper/base bs=4096 count=256 seek=$(( o * 256 )) oflag=direct conv=notrunc 2>/dev/null ||
        echo "write $w at MiB $o" >> /tmp/wfail
      read_at /dev/mapper/base $(( o * 1048576 )) 1048576 | cmp -s - /tmp/pw$w || echo "read back $w at MiB $o" >> /tmp/wfail
    ) &
    pids="$pids $!"
    w=$((w + 1))
  done
  dmsetup load base --table "0 $SZ snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P 8"
  dmsetup load snap --table "0 $SZ error"
  dmsetup resume base
  dmsetup resume snap
  info "$m: merge started: $(dmsetup status base)"
  for p in $pids; do wait $p; done
  info "$m: after the writes: $(dmsetup status base)"
  [ ! -s /tmp/wfail ] || fail "$m: during the merge: $(head -3 /tmp/wfail)"
  # The same writes in the model (distinct ranges: order does not matter).
  w=0
  for o in $(cat /tmp/ranges); do
    $DD if=/tmp/pw$w of=/tmp/model bs=1M seek=$o conv=notrunc 2>/dev/null
    w=$((w + 1))
  done
  wait_merged base 600
  st=$(dmsetup status base)
  info "$m: merged: $st"
  want=$(sum_file /tmp/model)
  expect_eq "$m: merged origin equals the snapshot image plus the writes" "$(sum_at /dev/mapper/base 0 $(( SZ * 512 )))" "$want"
  expect_eq "$m: real device equals it too" "$(sum_at /dev/mapper/base-real 0 $(( SZ * 512 )))" "$want"
  dmsetup suspend base
  dmsetup load base --table "0 $SZ linear /dev/mapper/base-real 0"
  dmsetup resume base
  dmsetup remove base; dmsetup remove snap; dmsetup remove base-cow; dmsetup remove base-real
  rm -f /tmp/model
  unload_modules
}
run_case rs test_merge_pipeline=1
run_case upstream

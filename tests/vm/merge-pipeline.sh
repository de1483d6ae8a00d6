# SPDX-License-Identifier: GPL-2.0
# A merge long enough for full-size batches (up to 16 MiB, spanning 16
# metadata areas) and for the pipeline (batch i + 1 copied while batch i's
# origin flush runs, both in the window), with writes to the merging device
# meanwhile. The merge pipelines only while no write waits for it; the
# test-kernel parameter test_merge_pipeline makes it pipeline always, so
# that these writes meet two batches in the window.
# 96 MiB origin, 4 KiB chunks: the COW holds 24576 exceptions in 96 areas,
# filled mostly sequentially. While the merge runs, 4 KiB writes of
# distinct patterns go to distinct random blocks, each read back at once.
# Whether each lands before or after its chunk is merged, the result is the
# snapshot image with those writes applied, which the test builds as a file
# and compares with the origin, on both modules.
. /tests/lib.sh
MB=96
SZ=$(( MB * 2048 ))
NWR=4
NW=50

run_case() {
  local m=$1
  shift
  load_module "$m" "$@"
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
  # for the resume): NWR loops, each writing NW distinct blocks and reading
  # every block back at once (a write released before its chunk is merged
  # would read back the COW's data).
  awk -v n=$(( NWR * NW )) -v nb=$(( SZ / 8 )) 'BEGIN { srand(11); while (c < n) { b = int(rand() * nb); if (!(b in s)) { s[b] = 1; print b; c++ } } }' > /tmp/blocks
  rm -f /tmp/wfail
  dmsetup suspend base; dmsetup suspend snap
  pids=
  for w in $(seq 0 $(( NWR - 1 ))); do
    (
      i=0
      for blk in $(sed -n "$(( w * NW + 1 )),$(( (w + 1) * NW ))p" /tmp/blocks); do
        pattern "w$w.$i" 4096 > /tmp/pw$w
        $DD if=/tmp/pw$w of=/dev/mapper/base bs=4096 seek="$blk" oflag=direct conv=notrunc 2>/dev/null || echo "write $w.$i" >> /tmp/wfail
        $DD if=/dev/mapper/base bs=4096 skip="$blk" count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/pw$w || echo "read back $w.$i (block $blk)" >> /tmp/wfail
        i=$((i + 1))
      done
    ) &
    pids="$pids $!"
  done
  dmsetup load base --table "0 $SZ snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P 8"
  dmsetup load snap --table "0 $SZ error"
  dmsetup resume base
  dmsetup resume snap
  info "$m: merge started: $(dmsetup status base)"
  for p in $pids; do wait $p; done
  info "$m: after the writes: $(dmsetup status base)"
  [ ! -s /tmp/wfail ] || fail "$m: during the merge: $(head -3 /tmp/wfail)"
  # The same writes in the model (distinct blocks: order does not matter).
  for w in $(seq 0 $(( NWR - 1 ))); do
    i=0
    for blk in $(sed -n "$(( w * NW + 1 )),$(( (w + 1) * NW ))p" /tmp/blocks); do
      pattern "w$w.$i" 4096 | $DD of=/tmp/model bs=4096 seek="$blk" conv=notrunc 2>/dev/null
      i=$((i + 1))
    done
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

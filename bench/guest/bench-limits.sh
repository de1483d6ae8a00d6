# SPDX-License-Identifier: GPL-2.0
# Benchmark 5: the physical limits, no snapshot module involved. Raw copy
# bandwidth from the COW disk to the origin disk (the merge direction:
# ceiling for merge throughput), and fio through a plain linear target
# (ceiling for origin and snapshot I/O).
#
# The copy's source is written first, as a merge's COW chunks are (never
# written sectors are holes in the host's image file, which read at memory
# speed), and the copy ends with fdatasync, as a merge flushes the origin
# before each commit.
. /tests/bench-lib.sh
fill /dev/vdb "$MERGE_MB"
for rep in $(seqn "$REPS"); do
  t0=$(now_us)
  $DD if=/dev/vdb of=/dev/vda bs=1M count="$MERGE_MB" iflag=direct oflag=direct conv=fdatasync 2>/dev/null || fail "raw copy"
  t1=$(now_us)
  echo "BENCH {\"impl\":\"none\",\"test\":\"raw_copy\",\"mib\":$MERGE_MB,\"rep\":$rep,\"secs\":$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }')}"
done
dmsetup create lin --table "0 $RSECT linear /dev/vda 0"
for pb in $LINEAR_PATTERNS; do
  rw=${pb%:*} bs=${pb#*:}
  for qd in $QDS; do
    for rep in $(seqn "$REPS"); do
      fio_run "{\"impl\":\"none\",\"test\":\"linear\",\"rw\":\"$rw\",\"bs\":$bs,\"qd\":$qd,\"rep\":$rep" \
        --filename=/dev/mapper/lin --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="${REGION_MB}M" --runtime="$RUNTIME" --time_based
    done
  done
done
dmsetup remove lin

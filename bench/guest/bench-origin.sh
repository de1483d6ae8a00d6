# SPDX-License-Identifier: GPL-2.0
# Benchmark 1: writes to the origin (snapshot-origin) with 0..N snapshots,
# first pass (every chunk still shared: copy-outs) and second pass (all
# chunks already copied), per chunk size and queue depth (at queue depth 1
# only the chunk sizes in QD1_CHUNKS, if set).
. /tests/bench-lib.sh
for pb in $ORIGIN_PATTERNS; do
  rw=${pb%:*} bs=${pb#*:}
  for qd in $QDS; do
    for snaps in $SNAPS; do
      chunks=$CHUNKS
      [ "$qd" = 1 ] && [ -n "${QD1_CHUNKS:-}" ] && chunks=$QD1_CHUNKS
      [ "$snaps" = 0 ] && chunks=0
      for chunk in $chunks; do
        for rep in $(seqn "$REPS"); do
          for impl in $(impls "$rep"); do
            load_module "$impl"
            stack_up "$snaps" "$chunk"
            m="{\"impl\":\"$impl\",\"test\":\"origin_write\",\"rw\":\"$rw\",\"bs\":$bs,\"qd\":$qd,\"snaps\":$snaps,\"chunk\":$chunk,\"rep\":$rep"
            fio_run "$m,\"pass\":1" --filename=/dev/mapper/base --rw="$rw" --bs="$bs" \
              --iodepth="$qd" --size="${REGION_MB}M" --runtime="$RUNTIME"
            if [ "$snaps" != 0 ]; then
              fill /dev/mapper/base "$REGION_MB"
              fio_run "$m,\"pass\":2" --filename=/dev/mapper/base --rw="$rw" --bs="$bs" \
                --iodepth="$qd" --size="${REGION_MB}M" --runtime="$RUNTIME" --time_based
            fi
            stack_down
          done
        done
      done
    done
  done
done
unload_modules

# SPDX-License-Identifier: GPL-2.0
# Benchmark 2: I/O to a snapshot device (one snapshot). Reads: half of the
# region was overwritten through the origin first, so half the chunks read
# from the COW and half from the origin. Writes: a fresh snapshot (first
# writes allocate exceptions; partial chunks are copied first).
. /tests/bench-lib.sh
for pb in $SNAPIO_PATTERNS; do
  rw=${pb%:*} bs=${pb#*:}
  for qd in $QDS; do
    for chunk in $SNAPIO_CHUNKS; do
      for rep in $(seqn "$REPS"); do
        for impl in $(impls "$rep"); do
          load_module "$impl"
          stack_up 1 "$chunk"
          m="{\"impl\":\"$impl\",\"test\":\"snap_io\",\"rw\":\"$rw\",\"bs\":$bs,\"qd\":$qd,\"snaps\":1,\"chunk\":$chunk,\"rep\":$rep"
          case "$rw" in
            *read)
              fill /dev/mapper/base $((REGION_MB / 2))
              fio_run "$m" --filename=/dev/mapper/snap0 --rw="$rw" --bs="$bs" \
                --iodepth="$qd" --size="${REGION_MB}M" --runtime="$RUNTIME" --time_based ;;
            *)
              fio_run "$m" --filename=/dev/mapper/snap0 --rw="$rw" --bs="$bs" \
                --iodepth="$qd" --size="${REGION_MB}M" --runtime="$RUNTIME" ;;
          esac
          stack_down
        done
      done
    done
  done
done
unload_modules

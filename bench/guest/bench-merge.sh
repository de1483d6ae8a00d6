# SPDX-License-Identifier: GPL-2.0
# Benchmark 3: merge throughput. One snapshot whose COW holds MERGE_MB of
# exceptions, written sequentially (1 MiB writes in order) or randomly (4 KiB
# writes in a random order, so the COW's order is not the origin's;
# MERGE_RAND_MB of them); then
# LVM's lvconvert --merge table sequence. Time from loading snapshot-merge
# until the status says used == metadata. With load=fio, a fio job (4 KiB
# random writes, queue depth 1) runs on the merging device during the merge;
# from its per-I/O latency log, the I/Os that completed while the merge ran
# give the write throughput and latency percentiles during the merge.
# Each merge runs at every snapshot_copy_throttle of MERGE_THROTTLES
# (percent of the time the copies may keep the disks busy; 100: no limit),
# set on both modules after the COW is filled.
. /tests/bench-lib.sh

# window_stats LOG T1 TB META: fio's latency log (ms since fio started,
# latency ns, ...) holds one line per I/O. fio starts while the device is
# suspended, so its first I/O completes just after the resume: from there,
# the I/Os that completed within the merge's duration (T1 - TB, in us) are
# counted and their latencies ranked. The first I/O (which waited for the
# resume) is left out.
window_stats() {
  awk -F, -v w="$(( ($2 - $3) / 1000 ))" 'NR == 1 { t0 = $1; next } $1 <= t0 + w { print $2 }' "$1" \
    | sort -n > /tmp/fl.sorted
  awk -v w="$(( ($2 - $3) / 1000 ))" -v meta="$4" '{ a[NR] = $1 } END {
      n = NR; if (n == 0) { printf "BENCHERR %s} fio: no I/O completed during the merge\n", meta; exit }
      i50 = int(n * 0.5 + 0.999999); i99 = int(n * 0.99 + 0.999999)
      printf "BENCH %s,\"ios\":%d,\"window_s\":%.3f,\"bw_mib\":%.4f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", \
        meta, n, w / 1000, n * 4096 / 1048576 / (w / 1000), a[i50] / 1000, a[i99] / 1000 }' /tmp/fl.sorted
}
for layout in seq rand; do
  # A random COW merges chunk by chunk (slow): it gets MERGE_RAND_MB.
  mb=$MERGE_MB; [ $layout = rand ] && mb=$MERGE_RAND_MB
  # The stack (origin region and COW slice) must hold MB.
  RSECT=$(( (mb > REGION_MB ? mb : REGION_MB) * 2048 ))
  COWSECT=$((RSECT + RSECT / 8 + 8192))
  for load in idle fio; do
   for thr in ${MERGE_THROTTLES:-100}; do
    for rep in $(seqn "$REPS"); do
      for impl in $(impls "$rep"); do
        load_module "$impl"
        stack_up 1 "$MERGE_CHUNK"
        case $layout in
          seq) fill /dev/mapper/base "$mb" ;;
          rand) fio --name=f --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite --bs=4k \
                  --random_generator=lfsr --randseed=$((rep + 7)) --size="${mb}M" \
                  --filename=/dev/mapper/base > /dev/null 2>&1 || fail "random fill" ;;
        esac
        st=$(dmsetup status snap0); set -- $st; used=${4%%/*}
        for mod in dm_snapshot dm_snapshot_rs; do
          [ ! -w /sys/module/$mod/parameters/snapshot_copy_throttle ] \
            || echo "$thr" > /sys/module/$mod/parameters/snapshot_copy_throttle
        done
        dmsetup suspend base; dmsetup suspend snap0
        t0=$(now_us)
        dmsetup load base --table "0 $RSECT snapshot-merge /dev/mapper/base-real /dev/mapper/cow0 P $MERGE_CHUNK"
        dmsetup load snap0 --table "0 $RSECT error"
        ta=$(now_us)
        fpid=
        if [ $load = fio ]; then
          # Started while the device is suspended, so that its I/O begins
          # with the merge; the 2 s it gets to start up are not counted.
          rm -f /tmp/fio.json /tmp/fl_*.log
          fio --name=b --direct=1 --ioengine=libaio --iodepth=1 --rw=randwrite --bs=4k \
            --random_generator=lfsr --randrepeat=1 --write_lat_log=/tmp/fl --log_avg_msec=0 \
            --size="${mb}M" --time_based --runtime=600 --filename=/dev/mapper/base \
            --output-format=json --output=/tmp/fio.json > /tmp/fio.err 2>&1 &
          fpid=$!
          sleep 2
        fi
        tb=$(now_us)
        dmsetup resume base
        dmsetup resume snap0
        wait_merged base 600
        t1=$(now_us)
        m="{\"impl\":\"$impl\",\"test\":\"merge\",\"layout\":\"$layout\",\"load\":\"$load\",\"chunk\":$MERGE_CHUNK,\"throttle\":$thr,\"mib\":$mb,\"used_sectors\":$used,\"rep\":$rep"
        echo "BENCH $m,\"secs\":$(awk -v a="$t0" -v b="$ta" -v c="$tb" -v d="$t1" 'BEGIN { printf "%.6f", (b - a + d - c) / 1e6 }')}"
        if [ -n "$fpid" ]; then
          # (a background job of a non-interactive shell may ignore SIGINT
          # until fio installs its handler: repeat, then TERM)
          n=0
          while kill -0 "$fpid" 2>/dev/null; do
            if [ $n -lt 20 ]; then kill -INT "$fpid"; else kill -TERM "$fpid"; fi
            n=$((n + 1)); sleep 0.5
          done
          wait "$fpid" || true
          if [ -s /tmp/fl_lat.1.log ]; then
            window_stats /tmp/fl_lat.1.log "$t1" "$tb" "$(echo "$m" | sed 's/"test":"merge"/"test":"merge_load"/')"
          else
            echo "BENCHERR $m} fio: $(head -c 300 /tmp/fio.err | tr '\n' ' ')"
          fi
        fi
        dmsetup suspend base
        dmsetup load base --table "0 $RSECT linear /dev/mapper/base-real 0"
        dmsetup resume base
        stack_down
      done
    done
   done
  done
done
unload_modules

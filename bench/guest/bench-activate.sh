# SPDX-License-Identifier: GPL-2.0
# Benchmark 4: activation. vdc and vdd hold COWs prebuilt on the host
# (bench/mkcow.py) with ACT_N exceptions of 4 KiB chunks, origin chunks in
# order (vdc, "seq") or shuffled (vdd, "rand"). Time `dmsetup create` (table
# load and resume: the exceptions are read then) with the page cache dropped,
# and the kernel memory it keeps: /proc/meminfo Slab + VmallocUsed (and the
# largest /proc/slabinfo growths) before and after.
. /tests/bench-lib.sh
osect=$(sectors /dev/vda)
for layout in seq rand; do
  cow=/dev/vdc; [ $layout = rand ] && cow=/dev/vdd
  for rep in $(seqn "$REPS"); do
    for impl in $(impls "$rep"); do
      load_module "$impl"
      sync; echo 3 > /proc/sys/vm/drop_caches; sleep 1
      s0=$(meminfo_kb Slab) v0=$(meminfo_kb VmallocUsed) f0=$(meminfo_kb MemFree)
      cat /proc/slabinfo > /tmp/slab0 2>/dev/null || true
      t0=$(now_us)
      dmsetup create act --table "0 $osect snapshot /dev/vda $cow P 8" || fail "activate $layout"
      t1=$(now_us)
      sleep 1
      s1=$(meminfo_kb Slab) v1=$(meminfo_kb VmallocUsed) f1=$(meminfo_kb MemFree)
      cat /proc/slabinfo > /tmp/slab1 2>/dev/null || true
      top=$(awk 'NR == FNR { if ($1 !~ /^(#|slabinfo)/) b[$1] = $3 * $4; next }
                 $1 !~ /^(#|slabinfo)/ { d = $3 * $4 - b[$1]; if (d > 262144) printf "%s:%d ", $1, d / 1024 }' /tmp/slab0 /tmp/slab1 | tr -d '"')
      st=$(dmsetup status act); set -- $st
      echo "BENCH {\"impl\":\"$impl\",\"test\":\"activate\",\"layout\":\"$layout\",\"exceptions\":$ACT_N,\"rep\":$rep,\"secs\":$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e6 }'),\"slab_kb\":$((s1 - s0)),\"vmalloc_kb\":$((v1 - v0)),\"memfree_kb\":$((f0 - f1)),\"status\":\"$4 $5\",\"slab_top\":\"${top% }\"}"
      dmsetup remove act
    done
  done
done
unload_modules

# SPDX-License-Identifier: GPL-2.0
# The 'stats' message of snapshot and snapshot-merge (Documentation/stats.md):
# every number is checked against what the scenario did. Snapshot counters
# after origin and snapshot writes; copies_in_flight while dm-delay holds a
# copy's COW write; overflow reason and time; merge progress with the origin
# slowed by dm-delay; refused messages and their log lines; status lines
# unchanged by messages; upstream's module has no message support.
. /tests/lib.sh

CH=16                         # chunk: 16 sectors, 8 KiB
CB=$((CH * 512))
SZ=65536                      # origin: 32 MiB

# kv LINE KEY: the value of KEY= in a stats line.
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
stats() { dmsetup message "$1" 0 stats || fail "stats message to $1 failed"; }
# The model: one line per chunk that gets an exception, and whether it was
# copied (a full-chunk snapshot write to a new chunk is no copy).
model_new() { grep -q "^$1 " /tmp/model 2>/dev/null || echo "$1 $2" >> /tmp/model; }
model_count() { wc -l < /tmp/model | tr -d ' '; }
model_copied() { grep -c ' copy$' /tmp/model || true; }
# origin_write CHUNK BYTES_IN: 4 KiB at CHUNK (+ offset) through the origin.
pattern o 4096 > /tmp/o4k
pattern s 4096 > /tmp/s4k
pattern f $CB > /tmp/full
owrite() { write_at /dev/mapper/org $(( $1 * CB )) /tmp/o4k; model_new "$1" copy; }
swrite() { write_at /dev/mapper/snap $(( $1 * CB + 4096 )) /tmp/s4k; model_new "$1" copy; }
# A whole aligned chunk in one bio (bs = chunk): the write is the copy.
sfull() {
  $DD if=/tmp/full of=/dev/mapper/snap bs=$CB seek="$1" count=1 oflag=direct conv=notrunc 2>/dev/null || fail "full write"
  model_new "$1" full
}

# ---- snapshot counters -----------------------------------------------------
load_module rs
insmod /modules/dm-delay.ko 2>/dev/null || true
rm -f /tmp/model
$DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
dmsetup create real --table "0 $SZ linear /dev/vda 0"
dmsetup create cowd --table "0 65536 delay /dev/vdc 0 0 /dev/vdc 0 0"
dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cowd P $CH"
dmsetup create org --table "0 $SZ snapshot-origin /dev/mapper/real"
s0=$(stats snap)
info "fresh: $s0"
expect_eq "fresh line" "$s0" "allocated_exceptions=0 copies_in_flight=0 copied_chunks=0 chunk_sectors=$CH invalid=none invalid_at=-"

for c in 0 1 2 3 5 8 13 21 34 55 89 144; do owrite $c; done
# Repeated writes to chunks that have their copy: no new exception.
for c in 0 5 144 0; do owrite $c; done
# Through the snapshot: a partial write to a new chunk (copy), to a chunk
# with an exception (nothing new), a full chunk (no copy), and a 16 KiB
# origin write over two new chunks.
swrite 300; swrite 3; sfull 301
write_at /dev/mapper/org $(( 400 * CB )) /tmp/full; model_new 400 copy
pattern t 16384 > /tmp/t16; write_at /dev/mapper/org $(( 500 * CB )) /tmp/t16; model_new 500 copy; model_new 501 copy
sync
s1=$(stats snap)
info "after writes: $s1 (model: $(model_count) exceptions, $(model_copied) copies)"
expect_eq "allocated_exceptions" "$(kv "$s1" allocated_exceptions)" "$(model_count)"
expect_eq "copied_chunks" "$(kv "$s1" copied_chunks)" "$(model_copied)"
expect_eq "copies_in_flight after the writes" "$(kv "$s1" copies_in_flight)" 0
expect_eq "invalid" "$(kv "$s1" invalid) $(kv "$s1" invalid_at)" "none -"
# The status line's used count agrees: used - metadata = exceptions * chunk.
set -- $(dmsetup status snap)
used=${4%%/*}; meta=$5
expect_eq "status used - metadata" "$(( (used - meta) / CH ))" "$(model_count)"

# ---- copies_in_flight while a copy's COW write is held -----------------------
dmsetup suspend cowd; dmsetup load cowd --table "0 65536 delay /dev/vdc 0 0 /dev/vdc 0 4000"; dmsetup resume cowd
owrite 700 &
pid=$!
sleep 1.5
s2=$(stats snap)
info "copy held: $s2"
expect_eq "copies_in_flight while the COW write is held" "$(kv "$s2" copies_in_flight)" 1
wait $pid || fail "held origin write"
dmsetup suspend cowd; dmsetup load cowd --table "0 65536 delay /dev/vdc 0 0 /dev/vdc 0 0"; dmsetup resume cowd
s3=$(stats snap)
expect_eq "copies_in_flight after the held write" "$(kv "$s3" copies_in_flight)" 0
expect_eq "allocated after the held write" "$(kv "$s3" allocated_exceptions)" "$(model_count)"
expect_eq "copied after the held write" "$(kv "$s3" copied_chunks)" "$(model_copied)"

# ---- refused messages; status and table unchanged --------------------------
st_before=$(dmsetup status snap; dmsetup table snap; dmsetup status org)
dmesg -c >/dev/null
if dmsetup message snap 0 bogus 2>/dev/null; then fail "bogus message accepted"; fi
dmesg | grep -q "device-mapper: snapshots: Unrecognised message received: bogus" || { dmesg | tail -5; fail "no log line for bogus"; }
if dmsetup message snap 0 stats extra 2>/dev/null; then fail "stats with an argument accepted"; fi
dmesg | grep -q "device-mapper: snapshots: Incorrect number of arguments for 'stats' message" || { dmesg | tail -5; fail "no log line for stats extra"; }
if dmsetup message org 0 stats 2>/dev/null; then fail "snapshot-origin accepted a message"; fi
dmesg | grep -q "Target type does not support messages" || fail "no dm core line for snapshot-origin"
stats snap >/dev/null; stats snap >/dev/null
st_after=$(dmsetup status snap; dmsetup table snap; dmsetup status org)
expect_eq "status and table lines after messages" "$st_after" "$st_before"
dmsetup remove org; dmsetup remove snap; dmsetup remove cowd; dmsetup remove real

# ---- overflow ---------------------------------------------------------------
# A COW of 4 chunks: header, one metadata area, two data chunks.
$DD if=/dev/zero of=/dev/vdd bs=4096 count=16 oflag=direct 2>/dev/null
dmsetup create real --table "0 $SZ linear /dev/vda 0"
dmsetup create small --table "0 $((4 * CH)) linear /dev/vdd 0"
dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/small P $CH"
dmsetup create org --table "0 $SZ snapshot-origin /dev/mapper/real"
write_at /dev/mapper/org 0 /tmp/o4k
write_at /dev/mapper/org $CB /tmp/o4k
s4=$(stats snap)
expect_eq "small COW: two exceptions, valid" "$(kv "$s4" allocated_exceptions) $(kv "$s4" invalid)" "2 none"
t0=$(date +%s)
write_at /dev/mapper/org $(( 2 * CB )) /tmp/o4k
t1=$(date +%s)
s5=$(stats snap)
info "overflowed: $s5 (written between $t0 and $t1)"
expect_eq "invalid reason" "$(kv "$s5" invalid)" overflow
at=$(kv "$s5" invalid_at)
[ "$at" -ge $((t0 - 2)) ] && [ "$at" -le $((t1 + 2)) ] || fail "invalid_at $at not within [$t0, $t1] +- 2"
expect_eq "status after the overflow" "$(dmsetup status snap | cut -d' ' -f4)" Invalid
dmsetup remove org; dmsetup remove snap
# Reloaded: invalid on disk, from an earlier activation.
dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/small P $CH"
s6=$(stats snap)
expect_eq "reloaded invalid snapshot" "$(kv "$s6" invalid) $(kv "$s6" invalid_at) $(kv "$s6" copied_chunks)" "on_disk - 0"
dmsetup remove snap; dmsetup remove small; dmsetup remove real

# ---- merge --------------------------------------------------------------------
# 16 MiB of origin writes (2048 chunks, four metadata areas): several merge
# batches. Each commit waits 1 s (test hook), and
# the origin's writes are delayed by dm-delay while merging.
$DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
dmsetup create real --table "0 $SZ delay /dev/vda 0 0 /dev/vda 0 0"
dmsetup create cow --table "0 65536 linear /dev/vdc 0"
dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P $CH"
dmsetup create org --table "0 $SZ snapshot-origin /dev/mapper/real"
pattern m 1048576 > /tmp/m1
for off in 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23; do write_at /dev/mapper/org $(( off * 1048576 )) /tmp/m1; done
N=$(( 16 * 1048576 / CB ))
snapsum=$(sum_at /dev/mapper/snap 0 $(( SZ * 512 )))
expect_eq "exceptions before the merge" "$(kv "$(stats snap)" allocated_exceptions)" $N
echo 1000 > /sys/module/dm_snapshot_rs/parameters/test_merge_commit_delay_ms
dmsetup suspend org; dmsetup suspend snap
dmsetup load org --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow P $CH"
dmsetup load snap --table "0 $SZ error"
dmsetup suspend real; dmsetup load real --table "0 $SZ delay /dev/vda 0 0 /dev/vda 0 50"; dmsetup resume real
dmsetup resume org; dmsetup resume snap
prev_rem=$N; samples=0; decreased=0; saw_rate=0; n=0
while :; do
  m=$(stats org)
  merged=$(kv "$m" merged_chunks); rem=$(kv "$m" remaining_chunks)
  rate=$(kv "$m" rate_chunks_per_sec); eta=$(kv "$m" eta_sec); state=$(kv "$m" state)
  [ "$rem" = 0 ] && break
  info "sample: $m"
  samples=$((samples + 1))
  expect_eq "merged + remaining while merging" $((merged + rem)) $N
  expect_eq "state while merging" "$state" merging
  [ "$rem" -le "$prev_rem" ] || fail "remaining grew: $prev_rem -> $rem"
  [ "$rem" -lt "$prev_rem" ] && decreased=$((decreased + 1))
  if [ "$merged" -gt 0 ]; then
    [ "$rate" -gt 0 ] || fail "rate 0 after progress: $m"
    case "$eta" in ''|*[!0-9]*) fail "eta not a number after progress: $m" ;; esac
    saw_rate=1
  fi
  prev_rem=$rem
  n=$((n + 1)); [ $n -lt 600 ] || fail "merge did not finish: $m"
  sleep 0.5
done
info "done: $m ($samples samples while merging, remaining decreased $decreased times)"
[ "$samples" -ge 2 ] || fail "fewer than 2 samples while merging"
[ "$decreased" -ge 1 ] || fail "remaining never decreased between samples"
[ "$saw_rate" = 1 ] || fail "no sample with progress and a rate"
expect_eq "after the merge" "$(kv "$m" merged_chunks) $(kv "$m" remaining_chunks) $(kv "$m" eta_sec) $(kv "$m" state)" "$N 0 0 done"
echo 0 > /sys/module/dm_snapshot_rs/parameters/test_merge_commit_delay_ms
expect_eq "merged origin equals the snapshot image" "$(sum_at /dev/mapper/org 0 $(( SZ * 512 )))" "$snapsum"
dmsetup remove org; dmsetup remove snap; dmsetup remove cow; dmsetup remove real
unload_modules

# ---- upstream: no message support (the expected difference) --------------
load_module upstream
$DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
dmsetup create snap --table "0 $SZ snapshot /dev/vda /dev/vdc P $CH"
dmesg -c >/dev/null
if dmsetup message snap 0 stats 2>/dev/null; then fail "upstream accepted stats"; fi
dmesg | grep -q "Target type does not support messages" || fail "upstream: no dm core line"
dmsetup remove snap
unload_modules
echo "snap-stats: ok"

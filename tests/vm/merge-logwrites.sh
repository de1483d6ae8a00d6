# SPDX-License-Identifier: GPL-2.0
# Crash consistency of snapshot copy-out and of snapshot-merge, checked by
# replaying a dm-log-writes log up to FLUSH/FUA points (issue 4).
#
# Design
# ------
# * One log for both devices. dm-log-writes orders the writes of ONE device;
#   two logs (origin, COW) could not be cut at the same instant. So:
#     lw        = log-writes /dev/vda /dev/vdc        (12 MiB, log on vdc)
#     base-real = linear lw 0..8 MiB                   (the origin, "-real")
#     base-cow  = linear lw 8..12 MiB                  (the COW)
#   and the snapshot stack sits on these, as LVM's does. A prefix of the log
#   ending at a FLUSH or FUA entry is a state the disk could be in after a
#   power cut at that moment (dm-log-writes logs a plain write only when a
#   later flush completes, i.e. when it is surely durable). Limit: with one
#   log a flush sent to the origin also "persists" earlier COW writes, which
#   two real disks with separate caches would not; the test is therefore
#   blind to a missing COW flush that an origin flush happens to cover.
# * Replay. The data device and the replay target start zeroed, so a replay
#   of entries 0..k onto zeros is the disk after a cut at k. Points are
#   replayed incrementally onto ACC (/dev/vdb, 0..12 MiB); for each point
#   ACC is copied to TEST (/dev/vdd) and the snapshot targets run on TEST.
# * Phases and what each point checks (S = the snapshot image, fill + the
#   writes made to the snapshot, flushed before the "snapw" mark):
#   - copy-out phase ("snapw" .. "merge-start" marks): the origin gets 2 MiB
#     of writes (about 500 copy-outs, two metadata areas with 4 KiB
#     chunks). At each point, "snapshot" over TEST must load and read S;
#     then snapshot-merge over TEST must merge back to exactly S.
#   - merge phase (after "merge-start"): LVM's table switch (origin ->
#     snapshot-merge, snapshot -> error), with a stamped write load on the
#     merging device in a 256 KiB region R that half overlaps chunks with
#     exceptions. Each load write is O_DIRECT|O_DSYNC; when it returns, the
#     log gets a mark "ack.N". At a point k, writes 1..A are acknowledged
#     (A = the last ack mark before k) and only write A+1 can be in flight.
#     snapshot-merge over TEST must load, resume and finish the merge, and
#     the origin must then read as S outside R and, inside R, as S's R with
#     load writes 1..A applied, or 1..A+1.
#   - the whole log replayed must equal the data device (checks the tool).
# * Points: every FLUSH/FUA entry if there are few, else evenly spaced
#   samples (LW_POINTS2 copy-out, LW_POINTS3 until the merge finished,
#   LW_POINTS4 load after it), plus the entry that ends each phase.
. /tests/lib.sh
MOD=${LW_MODULE:-rs}
CHUNK=8
OSZ=8388608; CSZ=4194304; TOT=$((OSZ + CSZ))
OSEC=$((OSZ / 512)); CSEC=$((CSZ / 512)); TSEC=$((TOT / 512))
RS=2490368; RL=262144; NB=$((RL / 4096)); SALT=5
NLOAD=${LW_NLOAD:-48}
P2=${LW_POINTS2:-6}; P3=${LW_POINTS3:-32}; P4=${LW_POINTS4:-3}
# dmsnap.lwbreak=1 (kernel command line) corrupts TEST's origin at 7 MiB
# (no exception there) before each check, =2 makes the model miss the last
# two acknowledged load writes: both must make the scenario fail.
BREAK=$(sed -n 's/.*dmsnap.lwbreak=\([0-9]*\).*/\1/p' /proc/cmdline)
REPLAY=/usr/bin/log-writes-replay
[ -x $REPLAY ] || fail "no $REPLAY in the initramfs"

load_module $MOD
insmod /modules/dm-log-writes.ko
# Folded commits (PREFLUSH area writes, FUA left to the next flush), as on
# virtio and most SATA disks; dm-log-writes itself advertises FUA.
# LW_FOLD=N tests the PREFLUSH|FUA commits instead.
fold=/sys/module/dm_snapshot_rs/parameters/test_commit_fold
[ $MOD != rs ] || { [ -w $fold ] && echo "${LW_FOLD:-Y}" > $fold; } || fail "no $fold (a CONFIG_KUNIT kernel is needed)"
# Pipelined merge commits even under the write load (LW_PIPE=N: as in
# production, committed at once while writes wait).
pipe=/sys/module/dm_snapshot_rs/parameters/test_merge_pipeline
[ $MOD != rs ] || { [ -w $pipe ] && echo "${LW_PIPE:-Y}" > $pipe; } || fail "no $pipe (a CONFIG_KUNIT kernel is needed)"
# A pause before each merge commit (LW_DELAY ms), so that load writes meet
# chunks copied back but not committed, which go to both the COW copy and
# the origin: a crash before the commit merges the COW copy again.
delay=/sys/module/dm_snapshot_rs/parameters/test_merge_commit_delay_ms
[ $MOD != rs ] || { [ -w $delay ] && echo "${LW_DELAY:-1000}" > $delay; } || fail "no $delay (a CONFIG_KUNIT kernel is needed)"
t0=$(date +%s)

# Zero the data device region and the replay target; zap the log's super.
$DD if=/dev/zero of=/dev/vda bs=1M count=$((TOT / 1048576)) oflag=direct 2>/dev/null
$DD if=/dev/zero of=/dev/vdb bs=1M count=$((TOT / 1048576)) oflag=direct 2>/dev/null
$DD if=/dev/zero of=/dev/vdc bs=1M count=1 oflag=direct 2>/dev/null
dmsetup create lw --table "0 $TSEC log-writes /dev/vda /dev/vdc"
dmsetup create base-real --table "0 $OSEC linear /dev/mapper/lw 0"
dmsetup create base-cow --table "0 $CSEC linear /dev/mapper/lw $OSEC"
mark() { dmsetup message lw 0 mark "$1"; }

# Fill: random data (unique per chunk), made durable.
head -c $OSZ /dev/urandom > /tmp/fill
$DD if=/tmp/fill of=/dev/mapper/base-real bs=1M oflag=direct conv=fsync 2>/dev/null || fail fill
$DD if=/dev/zero of=/dev/mapper/base-cow bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null
mark filled

dmsetup create snap --table "0 $OSEC snapshot /dev/mapper/base-real /dev/mapper/base-cow P $CHUNK"
dmsetup create base --table "0 $OSEC snapshot-origin /dev/mapper/base-real"
# Writes to the snapshot (whole chunks, a partial chunk, one inside R).
cp /tmp/fill /tmp/S
for w in 5242880:65536 4718592:8192 6292480:2048 $((RS + 8192)):4096; do
  off=${w%:*} len=${w#*:}
  gen $off $len > /tmp/w
  $DD if=/tmp/w of=/dev/mapper/snap bs=$len seek=$off oflag=direct,seek_bytes conv=notrunc,fsync 2>/dev/null || fail "snapshot write at $off"
  patch_file /tmp/S $off /tmp/w
done
mark snapw
SSUM=$(sum_file /tmp/S)
$DD if=/tmp/S of=/tmp/S.R bs=4096 skip=$((RS / 4096)) count=$NB 2>/dev/null

# Copy-out phase: origin writes through snapshot-origin.
cp /tmp/fill /tmp/O
# The last one makes the newest exceptions, merged first: those in R.
for w in 0:131072 1048576:65536 1572864:4096 3149824:8192 4194304:786432 \
         6291456:131072 8126464:262144 2097152:524288; do
  off=${w%:*} len=${w#*:}
  gen $((off + 1)) $len > /tmp/w
  write_at /dev/mapper/base $off /tmp/w
  patch_file /tmp/O $off /tmp/w
done
$DD if=/dev/null of=/dev/mapper/base conv=fsync,notrunc 2>/dev/null
expect_eq "live: snapshot reads S" "$(sum_dev /dev/mapper/snap)" "$SSUM"
expect_eq "live: origin reads the upgrade" "$(sum_dev /dev/mapper/base)" "$(sum_file /tmp/O)"
info "copy-out done: $(dmsetup status snap)"

# Stamps for the load, generated before the merge so the load is quick.
s=1; while [ $s -le $((NLOAD + 1)) ]; do stamp $s > /tmp/stamp.$s; s=$((s + 1)); done

# Merge with the LVM table sequence, and the stamped load.
# Slow the live merge down (kcopyd throttle) so that the load overlaps it.
thr=/sys/module/$([ $MOD = rs ] && echo dm_snapshot_rs || echo dm_snapshot)/parameters/snapshot_copy_throttle
[ -w $thr ] && echo ${LW_THROTTLE:-5} > $thr
mark merge-start
dmsetup suspend base; dmsetup suspend snap
dmsetup load base --table "0 $OSEC snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P $CHUNK"
dmsetup load snap --table "0 $OSEC error"
dmsetup resume base; dmsetup resume snap
(
  s=1
  while [ $s -le $NLOAD ]; do
    b=$(load_block $s $NB $SALT)
    $DD if=/tmp/stamp.$s of=/dev/mapper/base bs=4096 seek=$((RS / 4096 + b)) oflag=direct,dsync conv=notrunc 2>/dev/null \
      || { echo "load write $s failed"; exit 1; }
    mark ack.$s
    s=$((s + 1))
  done
) &
loadpid=$!
tm=$(date +%s)
wait_merged base 120
info "merge finished after $(( $(date +%s) - tm ))s: $(dmsetup status base)"
mark merged
[ -w $thr ] && echo 100 > $thr
# The replayed merges need no pause.
[ $MOD != rs ] || echo 0 > $delay
wait $loadpid || fail "load failed"
mark load-done
check_after_load "live" /dev/mapper/base $OSZ $RS $RL /tmp/S.R $SSUM $NLOAD $NLOAD $NB $SALT
dmsetup suspend base
dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
dmsetup resume base
dmsetup remove snap; dmsetup remove base; dmsetup remove base-cow; dmsetup remove base-real
$DD if=/dev/mapper/lw bs=1M count=$((TOT / 1048576)) iflag=direct 2>/dev/null | $SUM | cut -d' ' -f1 > /tmp/lwsum
dmsetup remove lw
info "live run done in $(( $(date +%s) - t0 ))s; log: $($REPLAY --log /dev/vdc)"

# ---- Replay ----
$REPLAY --log /dev/vdc --list > /tmp/list || fail "list the log"
idx_of() { awk -v m="$1" '$2 == "MARK" && $5 == m { print $1; exit }' /tmp/list; }
I_SNAPW=$(idx_of snapw); I_MERGE=$(idx_of merge-start); I_MERGED=$(idx_of merged); I_END=$(idx_of load-done)
[ -n "$I_SNAPW" ] && [ -n "$I_MERGE" ] && [ -n "$I_MERGED" ] && [ -n "$I_END" ] || fail "marks missing from the log"
[ "$(awk '$2 == "MARK" && $5 ~ /^ack\./' /tmp/list | wc -l)" = $NLOAD ] || fail "not $NLOAD ack marks in the log"
# pick FROM TO MAX: FLUSH/FUA entries in (FROM, TO), at most MAX of them,
# evenly spaced, always including the last one; then TO itself.
pick() {
  awk -v a="$1" -v b="$2" '$1 > a && $1 < b && $2 ~ /FLUSH|FUA/ { print $1 }' /tmp/list > /tmp/cand
  n=$(wc -l < /tmp/cand)
  echo "$n" > /tmp/ncand
  awk -v n="$n" -v m="$3" 'n <= m || (NR - 1) % int((n + m - 1) / m) == 0 || NR == n' /tmp/cand
  echo "$2"
}
pick "$I_SNAPW" "$I_MERGE" "$P2" > /tmp/pts2; n2=$(cat /tmp/ncand)
info "copy-out flush entries by flags: $(awk -v a="$I_SNAPW" -v b="$I_MERGE" '$1 > a && $1 < b && $2 ~ /FLUSH|FUA/ { c[$2 ($4 > 0 ? "+data" : "")]++ } END { for (f in c) printf "%s=%d ", f, c[f] }' /tmp/list)"
pick "$I_MERGE" "$I_MERGED" "$P3" > /tmp/pts3; n3=$(cat /tmp/ncand)
pick "$I_MERGED" "$I_END" "$P4" >> /tmp/pts3; n4=$(cat /tmp/ncand)
info "log: $(wc -l < /tmp/list) entries; FLUSH/FUA points: $n2 copy-out, $n3 while merging, $n4 load after the merge; testing $(wc -l < /tmp/pts2) + $(wc -l < /tmp/pts3)"

pos=0
nchk=0
check_point() {
  k=$1 phase=$2
  $REPLAY --log /dev/vdc --replay /dev/vdb --start-entry $pos --limit $((k + 1 - pos)) || fail "replay to $k"
  pos=$((k + 1))
  $DD if=/dev/vdb of=/dev/vdd bs=1M count=$((TOT / 1048576)) iflag=direct oflag=direct 2>/dev/null || fail "copy"
  check_test "$k" "$phase" "$k"
}
# dm-log-writes logs a plain write at the next flush, so a prefix of the
# log makes every write between two flushes durable together. A volatile
# cache may write them back in any order: a power cut just before flush k
# can keep later ones and lose earlier ones. For copy-out point k, also
# check the disk made of the entries up to the previous FLUSH/FUA entry p
# and those between p and k except the first plain write: a commit that
# released origin writes after writing its area, but before a flush made
# the area durable (folded commits, `test_commit_fold`), fails here.
tail_point() {
  k=$1
  p=$(awk -v k="$k" '$1 < k && $2 ~ /FLUSH|FUA/ { p = $1 } END { print p + 0 }' /tmp/list)
  d=$(awk -v p="$p" -v k="$k" '$1 > p && $1 < k && $2 == "NONE" && $4 > 0 { print $1; exit }' /tmp/list)
  [ -n "$d" ] || return 0
  $DD if=/dev/zero of=/dev/vdd bs=1M count=$((TOT / 1048576)) oflag=direct 2>/dev/null || fail "zero"
  $REPLAY --log /dev/vdc --replay /dev/vdd --limit $((p + 1)) || fail "replay to $p"
  [ $((k - d - 1)) -le 0 ] || $REPLAY --log /dev/vdc --replay /dev/vdd --start-entry $((d + 1)) --limit $((k - d - 1)) \
    || fail "replay $((d + 1))..$((k - 1))"
  check_test "$k" copyout "$k without write $d"
  ntail=$((ntail + 1))
}
# check_test K PHASE LABEL: the disk state on TEST (/dev/vdd).
check_test() {
  k=$1 phase=$2 label=$3
  dmsetup create t-real --table "0 $OSEC linear /dev/vdd 0"
  dmsetup create t-cow --table "0 $CSEC linear /dev/vdd $OSEC"
  if [ "$phase" = copyout ]; then
    dmsetup create t-snap --table "0 $OSEC snapshot /dev/mapper/t-real /dev/mapper/t-cow P $CHUNK" \
      || fail "point $label: the snapshot does not load"
    expect_eq "point $label ($phase): snapshot reads S" "$(sum_dev /dev/mapper/t-snap)" "$SSUM"
    dmsetup remove t-snap
  fi
  a=$(awk -v k="$k" '$1 < k && $2 == "MARK" && $5 ~ /^ack\./ { sub(/^ack\./, "", $5); a = $5 } END { print a + 0 }' /tmp/list)
  [ "$BREAK" != 1 ] || $DD if=/dev/urandom of=/dev/mapper/t-real bs=4096 seek=1792 count=1 oflag=direct conv=notrunc 2>/dev/null
  [ "$BREAK" != 2 ] || [ "$a" -lt 2 ] || a=$((a - 2))
  dmsetup create t-merge --table "0 $OSEC snapshot-merge /dev/mapper/t-real /dev/mapper/t-cow P $CHUNK" \
    || fail "point $label: snapshot-merge does not load"
  st0=$(dmsetup status t-merge)
  wait_merged t-merge 60
  maxa=$NLOAD; [ "$phase" = merge ] || maxa=0
  check_after_load "point $label ($phase, $st0)" /dev/mapper/t-merge $OSZ $RS $RL /tmp/S.R $SSUM $a $maxa $NB $SALT
  dmsetup remove t-merge
  dmsetup remove t-cow; dmsetup remove t-real
  nchk=$((nchk + 1))
}
tr0=$(date +%s)
ntail=0
for k in $(cat /tmp/pts2); do tail_point $k; check_point $k copyout; done
for k in $(cat /tmp/pts3); do check_point $k merge; done
# The rest of the log: the replay must reproduce the data device.
$REPLAY --log /dev/vdc --replay /dev/vdb --start-entry $pos || fail "replay the rest"
expect_eq "whole log replayed = the data device" \
  "$($DD if=/dev/vdb bs=1M count=$((TOT / 1048576)) iflag=direct 2>/dev/null | $SUM | cut -d' ' -f1)" "$(cat /tmp/lwsum)"
info "$nchk crash points ($ntail of them with an unflushed write lost) checked in $(( $(date +%s) - tr0 ))s (total $(( $(date +%s) - t0 ))s)"

# SPDX-License-Identifier: GPL-2.0
# Crash test, phase A (run by scripts/crash-test.sh; not a suite scenario).
# Rounds of: new snapshot, "upgrade" of the origin (copy-outs), LVM-style
# merge with a write load on the merging device, back to linear; until the
# host SIGKILLs QEMU at a random moment. What phase B needs to know what the
# disks must hold goes, O_DIRECT|O_DSYNC, to the notes disk /dev/vdd:
#   byte 0      header "CRASHNOTE stage= round= chunk= ... sum=" where sum
#               is the md5 of the snapshot image S of that round, and
#               stage 1: the snapshot exists (reads S), the origin is being
#                        upgraded; a merge of it must give S
#               stage 2: the merge may have started (LVM has committed it):
#                        activation must merge to S + acknowledged writes;
#                        used= and meta= are the COW's status figures before
#                        the merge (phase B compares them with what is left)
#               stage 3: merged, back to linear: the origin alone holds
#                        S + the round's acknowledged writes
#   1 MiB       S's content of the load region R = [rs, rs+rl)
#   2 MiB+512*N "ACK N": load write N of the current round returned (it was
#               O_DSYNC); round r's records start at 2 MiB + r*256 KiB
# Disks: origin = /dev/vda 0..32 MiB, COW = /dev/vdc 0..32 MiB, each under
# a device (base-real, base-cow) that is linear, or dm-delay while a "slow"
# profile is on (dmsnap.delay=D ms, D >= 50; 0 = never slow):
#   merge  from before the merge table switch until the merge has finished:
#          COW reads, origin writes, flushes of both wait D ms, so each merge
#          batch (read the COW, write the origin, commit) is in flight for
#          about 3 D and the merge for seconds (undelayed: well under one)
#   copy   for upgrade writes K and K+1 (dmsnap.slowk=K, 0 = none): origin
#          reads D/3, COW writes and flushes D: the copy-out, and the commit
#          the origin write waits for, are in flight for about 3 D
# Whatever dm-delay holds is lost when QEMU is killed, like any I/O queued
# in the guest. Switching a profile reloads base-real and base-cow
# (suspend, resume) while no snapshot I/O is in flight, except the load
# writes after the merge.
#
# Progress goes to results.log; the host aims its cuts at these markers and
# classifies them by the last one before the kill:
#   STAGE <n> round=<r> <what> <uptime>      the stages above, and 0 (setup),
#                                            2 (upgrade written), 3 (merge
#                                            table live), 4 (merged), 5 (linear)
#   UPG round=<r> k=<k> issued|done <uptime> upgrade write k (1..41) was
#                                            issued / has returned
#   MERGE round=<r> left=<x> of=<y> <status> <uptime>   the merge's progress
#                                            (used - metadata sectors of its
#                                            status, y before the merge),
#                                            each time it changes
#   SLOW round=<r> <profile> <uptime>        a delay profile is on (or off)
. /tests/lib.sh
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
SEED=$(arg dmsnap.seed); SEED=${SEED:-1}
IMPL=$(arg dmsnap.impl); IMPL=${IMPL:-rs}
set -- 8 16 32 64 128; shift $((SEED % 5)); CHUNK=$1
OSZ=33554432; OSEC=$((OSZ / 512))
RS=8388608; RL=262144; NB=$((RL / 4096)); SALT=$((SEED % 97))
NLOAD=30
DW=$(arg dmsnap.delay); DW=${DW:-0}
SLOWK=$(arg dmsnap.slowk); SLOWK=${SLOWK:-0}
up() { read -r u _ < /proc/uptime; echo "$u"; }   # no fork per marker
stage() { echo "STAGE $1 round=$round $2 $(up)"; }
note() {  # note TEXT OFFSET: a durable 512-byte record on the notes disk
  { printf '%s\n' "$1"; head -c 511 /dev/zero; } | head -c 512 > /tmp/note
  $DD if=/tmp/note of=/dev/vdd bs=512 seek=$(($2 / 512)) oflag=direct,dsync conv=notrunc 2>/dev/null || fail "note"
}
header() { note "CRASHNOTE stage=$1 round=$round seed=$SEED chunk=$CHUNK osz=$OSZ rs=$RS rl=$RL nload=$NLOAD salt=$SALT sum=$SSUM impl=$IMPL used=$USED meta=$META delay=$DW" 0; }
ackbase() { echo $((2097152 + round * 262144)); }

# merge_watch: wait_merged base, printing a MERGE line whenever the merge's
# progress changes.
merge_watch() {
  local n=0 st used meta last=
  while :; do
    st=$(dmsetup status base) || fail "status of base"
    set -- $st
    [ "$3" = snapshot-merge ] || fail "base: not a snapshot-merge status: $st"
    case "$4" in */*) ;; *) fail "base: merge status '$st'" ;; esac
    used=${4%%/*}; meta=$5
    [ "$((used - meta))" = "$last" ] || echo "MERGE round=$round left=$((used - meta)) of=$((USED - META)) $4 $5 $(up)"
    last=$((used - meta))
    [ "$used" = "$meta" ] && return 0
    n=$((n + 1)); [ $n -lt 6000 ] || fail "base: merge did not finish: $st"
    sleep 0.1
  done
}

# lower DEV RD WD FD: the table of a device over DEV's first OSZ bytes that
# delays reads, writes, flushes by RD, WD, FD ms (linear if all are 0).
lower() {
  if [ "$2$3$4" = 000 ]; then echo "0 $OSEC linear $1 0"
  else echo "0 $OSEC delay $1 0 $2 $1 0 $3 $1 0 $4"; fi
}
# slow off|copy|merge: switch the delay profile of base-real and base-cow.
slow() {
  local o c
  case $1 in
    off) o="0 0 0" c="0 0 0" ;;
    copy) o="$((DW / 3)) 0 0" c="0 $DW $DW" ;;
    merge) o="0 $DW $DW" c="$DW 0 $DW" ;;
  esac
  [ "$DW" -gt 0 ] || return 0
  dmsetup load base-real --table "$(lower /dev/vda $o)"
  dmsetup load base-cow --table "$(lower /dev/vdc $c)"
  dmsetup suspend base-real; dmsetup resume base-real
  dmsetup suspend base-cow; dmsetup resume base-cow
  echo "SLOW round=$round $1 $(up)"
}

load_module "$IMPL"
[ "$DW" = 0 ] || grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
round=0 USED=0 META=0
stage 0 "seed=$SEED chunk=$CHUNK impl=$IMPL delay=${DW}ms slowk=$SLOWK"
head -c $OSZ /dev/urandom | $DD of=/dev/vda bs=1M iflag=fullblock oflag=direct conv=fsync 2>/dev/null || fail fill
dmsetup create base-real --table "$(lower /dev/vda 0 0 0)"
dmsetup create base-cow --table "$(lower /dev/vdc 0 0 0)"
dmsetup create base --table "0 $OSEC linear /dev/mapper/base-real 0"

while :; do
  round=$((round + 1))
  # lvcreate -s: wipe the COW, origin -> snapshot-origin, new snapshot.
  wipe_cow /dev/mapper/base-cow
  dmsetup create snap --notable
  dmsetup suspend base
  dmsetup load snap --table "0 $OSEC snapshot /dev/mapper/base-real /dev/mapper/base-cow P $CHUNK"
  dmsetup load base --table "0 $OSEC snapshot-origin /dev/mapper/base-real"
  dmsetup resume snap; dmsetup resume base
  SSUM=$(sum_dev /dev/mapper/snap)
  read_at /dev/mapper/snap $RS $RL > /tmp/S.R
  $DD if=/tmp/S.R of=/dev/vdd bs=64K seek=16 oflag=direct,dsync conv=notrunc 2>/dev/null || fail "note S.R"
  $DD if=/dev/zero of=/dev/vdd bs=64K seek=$(( $(ackbase) / 65536 )) count=4 oflag=direct,dsync conv=notrunc 2>/dev/null
  USED=0 META=0
  header 1
  stage 1 "snapshot taken, upgrading the origin"

  # The upgrade: seeded origin writes (4 KiB .. 256 KiB), one over half of
  # R, through snapshot-origin: each one copies out first.
  awk -v s=$((SEED * 1000 + round)) -v osz=$OSZ -v rs=$RS 'BEGIN { srand(s);
    print rs - 65536, 196608;
    for (i = 0; i < 40; i++) { split("1 16 32 64", L, " "); l = L[1 + int(rand() * 4)] * 4096;
      o = int(rand() * (osz - l) / 4096) * 4096; print o, l } }' > /tmp/upgrade
  k=0
  while read -r off len; do
    k=$((k + 1))
    head -c $len /dev/urandom > /tmp/w
    [ $k != "$SLOWK" ] || slow copy
    read -r u _ < /proc/uptime; echo "UPG round=$round k=$k issued $u"
    write_at /dev/mapper/base $off /tmp/w
    read -r u _ < /proc/uptime; echo "UPG round=$round k=$k done $u"
    [ "$SLOWK" = 0 ] || [ $k != $((SLOWK + 1)) ] || slow off
  done < /tmp/upgrade
  st=$(dmsetup status snap)
  set -- $st; USED=${4%%/*} META=$5
  slow merge
  stage 2 "upgrade written: $st"

  # lvconvert --merge, with a stamped load on the merging device.
  header 2
  dmsetup suspend base; dmsetup suspend snap
  dmsetup load base --table "0 $OSEC snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P $CHUNK"
  dmsetup load snap --table "0 $OSEC error"
  dmsetup resume base; dmsetup resume snap
  stage 3 "merging: $(dmsetup status base)"
  (
    s=1
    while [ $s -le $NLOAD ]; do
      stamp $s > /tmp/stamp
      b=$(load_block $s $NB $SALT)
      $DD if=/tmp/stamp of=/dev/mapper/base bs=4096 seek=$((RS / 4096 + b)) oflag=direct,dsync conv=notrunc 2>/dev/null \
        || { echo "load write $s failed"; exit 1; }
      note "ACK $s" $(( $(ackbase) + 512 * s ))
      s=$((s + 1))
    done
  ) &
  merge_watch
  slow off
  stage 4 "merged: $(dmsetup status base)"
  wait $! || fail "load failed"
  # Merge done: LVM drops the snapshot and the origin becomes linear.
  header 3
  dmsetup suspend base
  dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
  dmsetup resume base
  dmsetup remove snap
  stage 5 "linear again"
done

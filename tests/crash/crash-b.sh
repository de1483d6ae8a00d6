# SPDX-License-Identifier: GPL-2.0
# Crash test, phase B (run by scripts/crash-test.sh on the disks phase A
# left behind when QEMU was killed): activate the way LVM would after a
# crash and check the data against the notes phase A left on /dev/vdd (see
# crash-a.sh). Prints "CRASH-RESULT ok ..." or fails with the mismatch.
# Before any check it prints what the host needs to place the cut:
#   CRASH-EVIDENCE stage=<notes' stage> round=<r> acked=<A>
#   CRASH-EVIDENCE left0=<x> of=<y>   (stage 1, 2: what the snapshot or the
#       merge had left when it was loaded after the cut, before it resumed:
#       used - metadata sectors of its status; y is the figure before the
#       merge, 0 in stage 1)
. /tests/lib.sh
read_at /dev/vdd 0 512 | tr -d '\0' | head -1 > /tmp/hdr
case "$(cat /tmp/hdr)" in
  CRASHNOTE*) ;;
  *) echo "CRASH-RESULT early: cut before the first snapshot, nothing to check"; exit 0 ;;
esac
for kv in $(cat /tmp/hdr); do
  case "$kv" in *=*) eval "H_${kv%%=*}=${kv#*=}" ;; esac
done
info "notes: $(cat /tmp/hdr)"
# evidence STATUS OF: the CRASH-EVIDENCE line of a snapshot or merge status.
evidence() {
  set -- $1 "$2"
  case "$4" in
    */*) echo "CRASH-EVIDENCE left0=$(( ${4%%/*} - $5 )) of=$6 status=$4/$5" ;;
    *) echo "CRASH-EVIDENCE left0=? of=$5 status=$4" ;;
  esac
}
OSEC=$((H_osz / 512)); NB=$((H_rl / 4096)); round=$H_round
load_module "$H_impl"
read_at /dev/vdd 1048576 $H_rl > /tmp/S.R
# Acknowledged load writes of this round: records 1..A, with no gaps.
ab=$((2097152 + round * 262144))
read_at /dev/vdd $ab 262144 | tr '\0' '\n' | sed -n 's/^ACK //p' > /tmp/acks
A=$(wc -l < /tmp/acks)
[ "$A" = 0 ] || [ "$(seq 1 $A | tr '\n' ' ')" = "$(tr '\n' ' ' < /tmp/acks)" ] || fail "ack records are not 1..$A: $(tr '\n' ' ' < /tmp/acks)"
echo "CRASH-EVIDENCE stage=$H_stage round=$round acked=$A"
# dmsnap.crashbreak=1 (set by CRASH_BREAK=1) makes the model forget the
# last two acknowledged writes: a cut with acks must then be a mismatch.
if grep -q 'dmsnap.crashbreak=1' /proc/cmdline && [ "$A" -ge 2 ]; then A=$((A - 2)); info "BREAK: model uses A=$A"; fi

dmsetup create base-real --table "0 $OSEC linear /dev/vda 0"
dmsetup create base-cow --table "0 $OSEC linear /dev/vdc 0"
case $H_stage in
  1)
    # Cut while the origin was being written: the snapshot must still read
    # S (LVM activates origin + snapshot; the snapshot alone is enough).
    dmsetup create snap --table "0 $OSEC snapshot /dev/mapper/base-real /dev/mapper/base-cow P $H_chunk" \
      || fail "stage 1: the snapshot does not load"
    evidence "$(dmsetup status snap)" 0
    expect_eq "stage 1: snapshot image after the crash" "$(sum_dev /dev/mapper/snap)" "$H_sum"
    info "stage 1: the snapshot reads S ($(dmsetup status snap))"
    dmsetup remove snap
    maxa=0 ;;
  2) maxa=$H_nload ;;
  3) maxa=$A ;;
  *) fail "bad stage $H_stage" ;;
esac
if [ "$H_stage" != 3 ]; then
  # LVM activates a merging snapshot directly as snapshot-merge.
  # (The status of the inactive table: what the COW held at the cut, before
  # the merge resumes; undelayed, it may finish before a status after the
  # resume.)
  dmsetup create base --notable
  dmsetup load base --table "0 $OSEC snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P $H_chunk" \
    || fail "stage $H_stage: snapshot-merge does not load"
  st0=$(dmsetup status --inactive base)
  evidence "$st0" $(( ${H_used:-0} - ${H_meta:-0} ))
  dmsetup resume base
  wait_merged base 300
  info "merge resumed at '$st0', finished: $(dmsetup status base)"
  r=$(check_after_load "stage $H_stage merged" /dev/mapper/base $H_osz $H_rs $H_rl /tmp/S.R $H_sum $A $maxa $NB $H_salt) \
    || { echo "$r"; exit 1; }
  echo "$r"
  m=$(sum_dev /dev/mapper/base)
  dmsetup suspend base
  dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
  dmsetup resume base
  expect_eq "linear after the merge" "$(sum_dev /dev/mapper/base)" "$m"
else
  dmsetup create base --table "0 $OSEC linear /dev/mapper/base-real 0"
  r=$(check_after_load "stage 3 (merged before the cut)" /dev/mapper/base $H_osz $H_rs $H_rl /tmp/S.R $H_sum $A $maxa $NB $H_salt) \
    || { echo "$r"; exit 1; }
  echo "$r"
fi
case "$r" in *in-flight*) landed=yes ;; *) landed=no ;; esac
echo "CRASH-RESULT ok stage=$H_stage round=$round chunk=$H_chunk acked=$A inflight_landed=$landed"

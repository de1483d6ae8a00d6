# SPDX-License-Identifier: GPL-2.0
# Store handover around snapshot-merge tables, on both modules, with the
# data checked against models (issue 17 items 3 and 4):
#  reload    a merging origin reloaded with a second (identical)
#            snapshot-merge table: refused ("A snapshot is already
#            merging."); the merge then finishes after a suspend/resume.
#  cancel    a snapshot-merge table waiting for a store whose owner is
#            removed first: it resumes as an invalid snapshot-merge that
#            passes all I/O to the origin (writes still copy out into the
#            origin's other snapshots).
#  toplain   a plain snapshot table takes a merging store over: origin
#            writes copy into it again; merging it later finishes.
#  transient snapshot-merge P over a live N store: refused ("Snapshot
#            exception store does not support snapshot-merge.").
#  restart   a merge that failed on COW errors restarts on the next resume
#            once the COW works (the status still says "Merge failed").
# Status lines and refusal messages are recorded per module and must match.
# dmsnap.cases=a,b on the kernel command line runs only those cases.
. /tests/lib.sh
SZ=32768                  # origin: 16 MiB
CS=16384                  # COW: 8 MiB, 4 KiB chunks
MERGE="0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow P 8"
CASES=$(sed -n 's/.*dmsnap.cases=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
CASES=${CASES:-reload cancel toplain transient restart}

# set_real linear|MS: the origin's lower device plain, or with writes (and
# flushes) delayed by MS ms, so a merge is still running when needed.
set_real() {
  if [ "$1" = linear ]; then t="0 $SZ linear /dev/vda 0"; else t="0 $SZ delay /dev/vda 0 0 /dev/vda 0 $1"; fi
  dmsetup load real --table "$t"; dmsetup resume real
}

# set_cow linear|error
set_cow() {
  if [ "$1" = linear ]; then t="0 $CS linear /dev/vdc 0"; else t="0 $CS error"; fi
  dmsetup load cow --table "$t"; dmsetup resume cow
}

# setup P|N: real (filled), s = snapshot of it on cow, origin.
setup() {
  wipe_cow /dev/vdc
  dmsetup create real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/real base 16
  dmsetup create cow --table "0 $CS linear /dev/vdc 0"
  dmsetup create s --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow $1 8"
  dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
}

cleanup() {
  local d
  for d in chk p s s2 origin cow cow2 real; do
    if dmsetup info "$d" >/dev/null 2>&1; then dmsetup remove "$d"; fi
  done
}

# scatter DEV SEED N STEP OFF: N 4 KiB writes, at OFF + i * STEP (bytes):
# each chunk its own exception and its own merge run.
scatter() {
  local i=0
  pattern "$2" $(( $3 * 4096 )) > /tmp/scatter
  while [ $i -lt "$3" ]; do
    $DD if=/tmp/scatter of="$1" bs=4096 skip=$i seek=$(( ($5 + i * $4) / 4096 )) count=1 \
      oflag=direct conv=notrunc 2>/dev/null || fail "scatter write to $1"
    i=$((i + 1))
  done
}

# start_merge: the origin's snapshot-origin becomes a snapshot-merge of s
# (as lvconvert --merge does); s gets an error table.
start_merge() {
  dmsetup suspend origin; dmsetup suspend s
  dmsetup load origin --table "$MERGE"
  dmsetup load s --table "0 $SZ error"
  dmsetup resume origin; dmsetup resume s
}

image() { read_at "$1" 0 $(( SZ * 512 )) > "$2"; }
st() { dmsetup status "$1"; }
klog() { dmesg | grep -o "$1" | head -1; }

case_reload() {
  setup P
  scatter /dev/mapper/origin o1 48 262144 0
  scatter /dev/mapper/s s1 16 1048576 131072
  want=$(sum_at /dev/mapper/s 0 $(( SZ * 512 )))
  set_real 1000
  start_merge
  dmesg -c >/dev/null
  if dmsetup reload origin --table "$MERGE" 2>/dev/null; then
    info "$M: reload with a second snapshot-merge table accepted"
    record $M.st "reload" "accepted"
  else
    record $M.st "reload" "refused: $(klog 'A snapshot is already merging.')"
  fi
  dmsetup suspend origin
  set_real linear
  # The same table (upstream), or the reloaded one taking over (the old
  # one then destroyed): either way the merge must go on to the end.
  dmsetup resume origin
  wait_merged origin 60
  expect_eq "$M: reload: origin after the merge" "$(sum_at /dev/mapper/real 0 $(( SZ * 512 )))" "$want"
  record $M.st "reload: merged" "$(st origin)"
  cleanup
}

case_cancel() {
  setup P
  dmsetup create cow2 --table "0 $CS linear /dev/vdc 65536"
  wipe_cow /dev/mapper/cow2
  dmsetup create s2 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow2 P 8"
  scatter /dev/mapper/origin o2 16 524288 0
  scatter /dev/mapper/s s2 8 1048576 131072
  image /dev/mapper/real /tmp/cancel.origin
  s2want=$(sum_at /dev/mapper/s2 0 $(( SZ * 512 )))
  # The merge table waits for s's store; s goes first.
  dmsetup reload origin --table "$MERGE"
  dmesg -c >/dev/null
  dmsetup remove s
  record $M.st "cancel" "$(klog 'Cancelling snapshot handover.')"
  # The cancelled table still holds the COW: a new table on it is refused
  # (upstream keeps the cancelled one on the origin's list).
  dmesg -c >/dev/null
  if dmsetup create s3 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P 8" 2>/dev/null; then
    record $M.st "cancel: a new table on the COW" "accepted"
    dmsetup remove s3
  else
    record $M.st "cancel: a new table on the COW" "refused: $(klog 'Snapshot cow pairing[a-z ]*failed')"
  fi
  dmsetup resume origin
  record $M.st "cancel: resumed" "$(st origin)"
  record $M.st "cancel: table" "$(dmsetup table origin)"
  expect_eq "$M: cancel: origin reads" "$(sum_at /dev/mapper/origin 0 $(( SZ * 512 )))" "$(sum_file /tmp/cancel.origin)"
  pattern c1 196608 > /tmp/c1
  write_at /dev/mapper/origin 1048576 /tmp/c1
  patch_file /tmp/cancel.origin 1048576 /tmp/c1
  expect_eq "$M: cancel: origin after a write" "$(sum_at /dev/mapper/origin 0 $(( SZ * 512 )))" "$(sum_file /tmp/cancel.origin)"
  expect_eq "$M: cancel: lower device after a write" "$(sum_at /dev/mapper/real 0 $(( SZ * 512 )))" "$(sum_file /tmp/cancel.origin)"
  expect_eq "$M: cancel: other snapshot kept its data" "$(sum_at /dev/mapper/s2 0 $(( SZ * 512 )))" "$s2want"
  record $M.st "cancel: other snapshot" "$(st s2)"
  cleanup
}

case_toplain() {
  setup P
  scatter /dev/mapper/origin o3 48 262144 0
  scatter /dev/mapper/s s3 16 1048576 131072
  image /dev/mapper/s /tmp/toplain.snap
  set_real 300
  start_merge
  sleep 1
  # A plain snapshot table takes the (merging) store over.
  dmsetup create p --notable
  dmsetup load p --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup suspend origin
  set_real linear
  dmsetup resume p
  dmsetup load origin --table "0 $SZ snapshot-origin /dev/mapper/real"
  dmsetup resume origin
  expect_eq "$M: toplain: snapshot after the handover" "$(sum_at /dev/mapper/p 0 $(( SZ * 512 )))" "$(sum_file /tmp/toplain.snap)"
  # Origin writes over chunks with and without exceptions.
  pattern n3 1048576 > /tmp/n3
  write_at /dev/mapper/origin 4194304 /tmp/n3
  write_at /dev/mapper/origin 0 /tmp/n3
  expect_eq "$M: toplain: origin write" "$(sum_at /dev/mapper/origin 4194304 1048576)" "$(sum_file /tmp/n3)"
  expect_eq "$M: toplain: snapshot after origin writes" "$(sum_at /dev/mapper/p 0 $(( SZ * 512 )))" "$(sum_file /tmp/toplain.snap)"
  # Merging it now brings the origin back to the snapshot.
  dmsetup suspend origin; dmsetup suspend p
  dmsetup load origin --table "$MERGE"
  dmsetup load p --table "0 $SZ error"
  dmsetup resume origin; dmsetup resume p
  wait_merged origin 60
  expect_eq "$M: toplain: origin after the second merge" "$(sum_at /dev/mapper/real 0 $(( SZ * 512 )))" "$(sum_file /tmp/toplain.snap)"
  record $M.st "toplain: merged" "$(st origin)"
  cleanup
}

case_transient() {
  setup N
  scatter /dev/mapper/origin o4 8 1048576 0
  want=$(sum_at /dev/mapper/s 0 $(( SZ * 512 )))
  dmsetup suspend origin; dmsetup suspend s
  dmesg -c >/dev/null
  if dmsetup load origin --table "$MERGE" 2>/dev/null; then
    fail "$M: transient: snapshot-merge P over a live N store accepted"
  fi
  record $M.st "transient" "refused: $(klog 'Snapshot exception store does not support snapshot-merge.')"
  dmsetup resume origin; dmsetup resume s
  expect_eq "$M: transient: snapshot kept its data" "$(sum_at /dev/mapper/s 0 $(( SZ * 512 )))" "$want"
  record $M.st "transient: snapshot" "$(st s)"
  cleanup
}

case_restart() {
  setup P
  scatter /dev/mapper/origin o5 48 262144 0
  scatter /dev/mapper/s s5 16 1048576 131072
  want=$(sum_at /dev/mapper/s 0 $(( SZ * 512 )))
  # The merge starts with the COW failing: the first copy fails.
  dmsetup suspend origin; dmsetup suspend s
  dmsetup load origin --table "$MERGE"
  dmsetup load s --table "0 $SZ error"
  set_cow error
  dmsetup resume origin; dmsetup resume s
  n=0
  while [ "$(st origin)" != "0 $SZ snapshot-merge Merge failed" ]; do
    n=$((n + 1)); [ $n -lt 300 ] || fail "$M: restart: merge did not fail: $(st origin)"
    sleep 0.1
  done
  record $M.st "restart: failed" "$(st origin)"
  # COW back; a resume restarts the merge, which now finishes.
  set_cow linear
  dmsetup suspend origin; dmsetup resume origin
  n=0
  while [ "$(sum_at /dev/mapper/real 0 $(( SZ * 512 )))" != "$want" ]; do
    n=$((n + 1)); [ $n -lt 60 ] || fail "$M: restart: merge did not restart on resume: $(st origin)"
    sleep 1
  done
  record $M.st "restart: merged" "$(st origin)"
  dmsetup remove origin
  dmsetup create chk --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P 8"
  record $M.st "restart: store after the merge" "$(st chk)"
  cleanup
}

mods=$(modules_with_target snapshot-merge)
[ -n "$mods" ] || fail "no module provides the snapshot-merge target"
for M in $mods; do
  load_module "$M"
  grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
  rm -f /tmp/$M.st
  for c in $CASES; do
    info "$M: case $c"
    case_$c
  done
  unload_modules
done
compare_modules "$mods" st

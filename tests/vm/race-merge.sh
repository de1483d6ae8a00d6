# SPDX-License-Identifier: GPL-2.0
# Race windows of the merge paths made seconds wide (issue 17): dm-delay
# under ONE path at a time (origin reads, origin writes, COW reads, COW
# writes, origin or COW flushes), crossed with merge operations, each case
# run on upstream's module and on this one in the same boot.
#
# Stack (per case, LVM's names): every disk sits behind a dm-delay "PV"
# with a delay per class (read, write, flush); the COW's writes go through
# a linear "gate" gcw:
#     pvo = delay /dev/vda 0 R /dev/vda 0 W /dev/vda 0 F
#     pvc = delay /dev/vdc 0 R gcw 0 W /dev/vdc 0 F      gcw = linear /dev/vdc
#     base-real = linear pvo, base-cow = linear pvc, snap, base
# A case reloads one PV with a delay for one class ("o w 300": origin
# writes 300 ms), or holds one class: a delay of $HOLD ms, longer than any
# case, released by reloading the PV without delays (dm-delay's presuspend
# sends what it holds). dm-delay's status counts the I/Os it is holding
# per class, so a case knows when the merge reached the held path, and the
# window is as wide as the case needs, without timing. The gate lets a
# case hold the COW's writes briefly (suspended: a burst on resume) and is
# replaced by dm-flakey error_writes for the "merge failed" cases.
#
# Geometry: 4 MiB origin, 4 KiB chunks (256 exceptions per area). The
# snapshot is taken, 0..3 MiB of the origin is rewritten (768 copy-outs:
# areas 0..2, one consecutive run each) and 64 KiB at 3.5 MiB is written
# to the snapshot (area 3, 16 entries): the newest, merged first by both
# modules (upstream: one run per area, area 3 first; this module: batches
# of up to 4 MiB from the tail, here one). The merge uses LVM's table
# sequence (origin -> snapshot-merge, snapshot -> error).
#
# The model /tmp/M is what the merging device must read: the snapshot image
# plus every write made to the merging device. Every read is checked
# against it; so are the final contents of the device and of -real, and at
# the hold points the "disk image": the raw origin with every entry of the
# raw on-disk COW list copied over it, i.e. what a merge restarted from the
# disks (a crash, a reactivation) would produce. Lines starting "cmp:" go
# to /tmp/MOD.CASE.cmp and must be identical on both modules (status lines,
# raw list sizes and ordering facts that do not depend on batch sizes);
# "info:" lines report what was measured (durations, which writes were
# released while a window was held). Every case runs on both modules; the
# scenario fails at the end listing every failing case. A subset runs with
# VM_APPEND="dmsnap.race=CASE,CASE" (scripts/vm/run.sh).
. /tests/lib.sh

OSZ=4194304; OSEC=8192
CSEC=8192
CB=4096; CH=8
EPA=256
TAIL=3670016          # 64 KiB written to the snapshot: area 3, merged first
A0=0; A1=1048576; A2=2097152; A3=3145728   # areas 0, 1, 2 (A3: their end)
NOEX=3145728          # no exception
MERGE_TABLE="0 $OSEC snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P $CH"

# case  path(disk class how)  operation
# how: milliseconds of delay, "hold" (delayed $HOLD ms until released),
# "flakey" (all COW writes fail) or "flakey2" (writes to COW area 1 fail).
CASES="
rw-oread     o r 400     rw
rw-owrite    o w 400     rw
rw-cread     c r 400     rw
rw-cwrite    c w 400     rw
rw-oflush    o f 600     rw
rw-cflush    c f 600     rw
copy-held    o w hold    copyheld
oflush-held  o f hold    flushheld
dual-write   o f hold    dual
cflush-held  c f hold    cowflushheld
handover     o f 1000    handover
suspend-drain o w hold   suspenddrain
reactivate   o w 300     reactivate
fail-all     c w flakey  fail
fail-part    c w flakey2 fail
"
HOLD=100000
ONLY=$(sed -n 's/.*dmsnap.race=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')

cmp_line() { echo "cmp: $*"; echo "$*" >> /tmp/$M.$CASE.cmp; }
note() { echo "info: $M $CASE: $*"; }
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# ---- the stack ----
gate_table() { echo "0 $CSEC linear $1 0"; }
delay_table() {  # DISK R W F
  local dev=/dev/vda wdev=/dev/vda
  [ $1 = o ] || { dev=/dev/vdc; wdev=/dev/mapper/gcw; }
  echo "0 $CSEC delay $dev 0 $2 $wdev 0 $3 $dev 0 $4"
}
set_delay() {  # DISK R W F: reload the PV (suspend flushes what it delays)
  dmsetup load pv$1 --table "$(delay_table "$@")"
  dmsetup resume pv$1
}
# dcount DISK FIELD: how many I/Os dm-delay holds now (4 read, 5 write,
# 6 flush).
dcount() { dmsetup status pv$1 | awk -v f="$2" '{ print $f }'; }
field_of() { case $1 in r) echo 4 ;; w) echo 5 ;; f) echo 6 ;; esac; }
wait_count() {  # DISK CLASS MIN SECONDS
  local i=0 f; f=$(field_of $2)
  while [ "$(dcount $1 $f)" -lt "$3" ]; do
    i=$((i + 1)); [ $i -le $(( $4 * 20 )) ] || fail "pv$1 class $2: fewer than $3 I/Os held after $4 s: $(dmsetup status pv$1)"
    sleep 0.05
  done
}

# make_golden: the pre-merge disks, made once with upstream's module and
# kept on /dev/vdb (origin) and /dev/vdd (COW): fill, take the snapshot,
# rewrite 0..3 MiB of the origin (copy-outs), write the snapshot's tail.
make_golden() {
  load_module upstream
  dmsetup create base-real --table "0 $OSEC linear /dev/vda 0"
  $DD if=/dev/zero of=/dev/vdc bs=1M count=$((CSEC / 2048)) oflag=direct conv=notrunc 2>/dev/null
  dmsetup create base-cow --table "0 $CSEC linear /dev/vdc 0"
  $DD if=/tmp/fill of=/dev/mapper/base-real bs=1M oflag=direct conv=notrunc 2>/dev/null || fail "fill"
  dmsetup create snap --table "0 $OSEC snapshot /dev/mapper/base-real /dev/mapper/base-cow P $CH"
  dmsetup create base --table "0 $OSEC snapshot-origin /dev/mapper/base-real"
  $DD if=/tmp/up of=/dev/mapper/base bs=256K oflag=direct conv=notrunc 2>/dev/null || fail "upgrade"
  write_at /dev/mapper/snap $TAIL /tmp/sw
  expect_eq "golden: snapshot image" "$(sum_dev /dev/mapper/snap)" "$(sum_file /tmp/S)"
  expect_eq "golden: origin" "$(sum_dev /dev/mapper/base)" "$(sum_file /tmp/O)"
  dmsetup remove base; dmsetup remove snap; dmsetup remove base-cow; dmsetup remove base-real
  unload_modules
  $DD if=/dev/vda of=/dev/vdb bs=1M count=$((OSEC / 2048)) iflag=direct oflag=direct 2>/dev/null || fail "save origin"
  $DD if=/dev/vdc of=/dev/vdd bs=1M count=$((CSEC / 2048)) iflag=direct oflag=direct 2>/dev/null || fail "save COW"
}

# setup: the golden disks back in place, the stack, the snapshot activated
# from its COW (as after a reboot) and the origin as snapshot-origin.
setup() {
  $DD if=/dev/vdb of=/dev/vda bs=1M count=$((OSEC / 2048)) iflag=direct oflag=direct 2>/dev/null || fail "restore origin"
  $DD if=/dev/vdd of=/dev/vdc bs=1M count=$((CSEC / 2048)) iflag=direct oflag=direct 2>/dev/null || fail "restore COW"
  load_module "$M"
  dmesg -c > /dev/null
  dmsetup create gcw --table "$(gate_table /dev/vdc)"
  for d in o c; do dmsetup create pv$d --table "$(delay_table $d 0 0 0)"; done
  dmsetup create base-real --table "0 $OSEC linear /dev/mapper/pvo 0"
  dmsetup create base-cow --table "0 $CSEC linear /dev/mapper/pvc 0"
  dmsetup create snap --table "0 $OSEC snapshot /dev/mapper/base-real /dev/mapper/base-cow P $CH"
  dmsetup create base --table "0 $OSEC snapshot-origin /dev/mapper/base-real"
  cp /tmp/S /tmp/M
  cmp_line "snapshot before the merge: $(dmsetup status snap)"
  cow_list
  cmp_line "COW list before the merge: $LIST"
}

# start_merge [HOOK]: LVM's lvconvert --merge. HOOK (a command) runs in
# the background from just before the origin resumes ($HOOK: its pid): its
# first I/O waits for the resume and meets the merge start.
start_merge() {
  T0=$(now_ms)
  dmsetup suspend base; dmsetup suspend snap
  dmsetup load base --table "$MERGE_TABLE"
  dmsetup load snap --table "0 $OSEC error"
  if [ -n "${1:-}" ]; then
    ( set -e; $1 ) &
    HOOK=$!
    sleep 0.3
  fi
  dmsetup resume base
  dmsetup resume snap
}

merged() {
  local st; st=$(dmsetup status base)
  set -- $st
  [ "$3" = snapshot-merge ] && [ "${4%%/*}" = "$5" ]
}

# finish: the merge completes, the device and -real read as the model, LVM
# drops the merge target (linear origin), contents unchanged.
finish() {
  wait_merged base 240
  note "merged, checked $(( $(now_ms) - T0 )) ms after the merge started"
  cmp_line "after the merge: $(dmsetup status base); raw COW header $(cow_header); COW list $(cow_list; echo $LIST)"
  expect_eq "$CASE: merged device = model" "$(sum_dev /dev/mapper/base)" "$(sum_file /tmp/M)"
  expect_eq "$CASE: -real = model" "$(sum_dev /dev/mapper/base-real)" "$(sum_file /tmp/M)"
  dmsetup suspend base
  dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
  dmsetup resume base
  expect_eq "$CASE: linear origin = model" "$(sum_dev /dev/mapper/base)" "$(sum_file /tmp/M)"
}

# ---- model and checks ----
slice() { $DD if="$1" bs=512 skip=$(($2 / 512)) count=$(($3 / 512)) 2>/dev/null; }
want_sum() { slice /tmp/M "$1" "$2" | $SUM | cut -d' ' -f1; }
chk() {  # LABEL OFF LEN: the merging device reads as the model
  expect_eq "$CASE: read $1 ($2+$3) during '$(dmsetup status base | cut -d' ' -f4-)'" \
    "$(sum_at /dev/mapper/base "$2" "$3")" "$(want_sum "$2" "$3")"
}
mw() {  # OFF LEN SEED: write through the merging device, and to the model
  gen "$3" "$2" > /tmp/w.$3
  write_at /dev/mapper/base "$1" /tmp/w.$3
  patch_file /tmp/M "$1" /tmp/w.$3
}
# bgw OFF LEN SEED: the same write in the background; /tmp/done.SEED
# appears when it returned (ok or err).
bgw() {
  gen "$3" "$2" > /tmp/w.$3
  rm -f /tmp/done.$3
  ( if $DD if=/tmp/w.$3 of=/dev/mapper/base bs="$2" seek="$1" oflag=direct,seek_bytes conv=notrunc 2>/dev/null
    then echo ok > /tmp/done.$3; else echo err > /tmp/done.$3; fi ) > /dev/null 2>&1 &
  echo $! >> /tmp/bgpids
}
bg_wait() {  # SECONDS SEED...: wait until all have returned; 0 if they did
  local lim=$(( $1 * 10 )) i=0 s; shift
  while :; do
    for s in "$@"; do [ -f /tmp/done.$s ] || break; s=; done
    [ -z "$s" ] && return 0
    i=$((i + 1)); [ $i -le $lim ] || return 1
    sleep 0.1
  done
}
bg_ok() {  # SEED...: all returned ok; apply them to the model in this order
  local s
  for s in "$@"; do
    bg_wait 240 $s || fail "write $s did not return"
    [ "$(cat /tmp/done.$s)" = ok ] || fail "write $s failed"
  done
}
model_apply() { patch_file /tmp/M "$1" /tmp/w.$2; }  # OFF SEED

# cow_list: the raw on-disk exception list, read as the kernel reads it
# (area after area while full; an entry with new_chunk 0 ends it), into
# /tmp/cowlist ("area old new"); LIST = entries per area.
cow_list() {
  local a=0 n
  : > /tmp/cowlist
  LIST=
  while [ $a -lt 8 ]; do
    read_at /dev/vdc $(( (1 + a * (EPA + 1)) * CB )) $CB | od -A n -t u8 -v -w16 |
      awk -v a=$a '$2 == 0 { exit } { print a, $1, $2 }' > /tmp/area
    n=$(wc -l < /tmp/area)
    cat /tmp/area >> /tmp/cowlist
    LIST=$LIST${LIST:+,}$n
    [ "$n" -eq $EPA ] || break
    a=$((a + 1))
  done
}
# cow_header: magic, valid, version, chunk size (sectors) as on disk.
cow_header() { read_at /dev/vdc 0 512 | head -c 16 | od -A n -t x4 | tr -s ' ' | sed 's/^ //'; }
# disk_check LABEL: the disk image (raw origin + raw COW list) = model.
disk_check() {
  cow_list
  read_at /dev/vda 0 $OSZ > /tmp/img
  awk 'NR == 1 { o = $2; n = $3; l = 1; next }
       $2 == o + l && $3 == n + l { l++; next }
       { print o, n, l; o = $2; n = $3; l = 1 }
       END { if (NR) print o, n, l }' /tmp/cowlist > /tmp/runs
  while read -r o n l; do
    $DD if=/dev/vdc of=/tmp/img bs=$CB skip=$n seek=$o count=$l iflag=direct conv=notrunc 2>/dev/null || fail "raw COW read"
  done < /tmp/runs
  expect_eq "$CASE: $1: disk image (raw origin + on-disk COW list $LIST) = model" "$(sum_file /tmp/img)" "$(sum_file /tmp/M)"
}
# raw_equal OFF: the raw origin chunk and the COW copy its on-disk entry
# points to hold the same data (prints "gone" if no entry is left).
raw_equal() {
  local new
  new=$(awk -v o=$(($1 / CB)) '$2 == o { print $3 }' /tmp/cowlist)
  [ -n "$new" ] || { echo gone; return 0; }
  [ "$(sum_at /dev/vda "$1" $CB)" = "$(sum_at /dev/vdc $((new * CB)) $CB)" ] && echo same || echo differ
}
raw_is() {  # OFF LEN FILE: the raw origin holds FILE there
  [ "$(sum_at /dev/vda "$1" "$2")" = "$(sum_file "$3")" ]
}

release() { set_delay $1 0 0 0; }
# path DISK CLASS HOW: put the delay (or the hold) on one path.
path_on() {
  local r=0 w=0 f=0 ms=$3
  case $3 in hold) ms=$HOLD ;; flakey*) return 0 ;; esac
  case $2 in r) r=$ms ;; w) w=$ms ;; f) f=$ms ;; esac
  set_delay $1 $r $w $f
}
path_off() { set_delay $1 0 0 0; }

# ---- operations ----

# dual_pair OFF I: two concurrent overlapping writes to one chunk: 4 KiB
# (da.I) and 2 KiB at +1 KiB (db.I); either order is right, as long as
# every later read agrees. Prints nothing; /tmp/c1.I (db last), /tmp/w.da.I
# (da last) are the two possible chunk contents.
dual_start() {
  gen "da.$2" $CB > /tmp/w.da.$2; rm -f /tmp/done.da.$2
  gen "db.$2" 2048 > /tmp/w.db.$2; rm -f /tmp/done.db.$2
  cp /tmp/w.da.$2 /tmp/c1.$2; patch_file /tmp/c1.$2 1024 /tmp/w.db.$2
  ( $DD if=/tmp/w.da.$2 of=/dev/mapper/base bs=$CB seek=$1 oflag=direct,seek_bytes conv=notrunc 2>/dev/null && echo ok > /tmp/done.da.$2 || echo err > /tmp/done.da.$2 ) > /dev/null 2>&1 &
  echo $! >> /tmp/bgpids
  ( $DD if=/tmp/w.db.$2 of=/dev/mapper/base bs=2048 seek=$(($1 + 1024)) oflag=direct,seek_bytes conv=notrunc 2>/dev/null && echo ok > /tmp/done.db.$2 || echo err > /tmp/done.db.$2 ) > /dev/null 2>&1 &
  echo $! >> /tmp/bgpids
}
# dual_read OFF I: which order the device shows (b-last / a-last), after
# both returned; fails if neither. Sets the model to it.
dual_read() {
  local got; got=$(sum_at /dev/mapper/base "$1" $CB)
  if [ "$got" = "$(sum_file /tmp/c1.$2)" ]; then echo b-last; patch_file /tmp/M "$1" /tmp/c1.$2
  elif [ "$got" = "$(sum_file /tmp/w.da.$2)" ]; then echo a-last; patch_file /tmp/M "$1" /tmp/w.da.$2
  else echo neither; fi
}

# rw: rounds of reads and writes of the merging device (chunks in the
# batch being merged, not yet merged, merged, without exception; single
# writes to the tail and to area 1; one pair of concurrent overlapping
# writes, to the tail or to area 2's last chunks). Round 1 is issued
# while the origin is suspended for the switch to snapshot-merge, so it
# meets the merge start; more rounds follow until the merge is done (at
# most 3; the delay is taken off after the second). Every read is checked
# against the model; each pair is read again after the merge (no write in
# between: the two reads must agree).
rw_round() {
  local r=$1 st p o
  st=$(dmsetup table base | cut -d' ' -f3)
  [ "$st" = snapshot-merge ] && st=$(dmsetup status base | cut -d' ' -f4-) || st="before the resume"
  chk "tail (merged first)" $TAIL 16384
  chk "area 0 (merged last)" $((A0 + r * 65536)) 16384
  chk "no exception" $NOEX 8192
  mw $((TAIL + r * CB)) $CB "rw.t$r"; chk "tail chunk written" $((TAIL + r * CB)) $CB
  mw $((A1 + r * 2 * CB)) $CB "rw.a$r"; chk "area 1 chunk written" $((A1 + r * 2 * CB)) $CB
  p=$((A3 - (r + 1) * CB))   # area 2's tail, merged in the middle
  [ $((r % 2)) = 0 ] || p=$((TAIL + (8 + r) * CB))
  dual_start $p $r
  bg_wait 240 da.$r db.$r || fail "pair $r did not return"
  bg_ok da.$r db.$r
  o=$(dual_read $p $r)
  [ "$o" != neither ] || fail "$CASE: pair $r at $p reads as neither write"
  echo "$p:$r:$o" >> /tmp/pairs
  note "round $r from '$st': pair at $p shows $o"
}
op_rw() {
  : > /tmp/pairs
  start_merge "rw_round 1"
  wait $HOOK || fail "$CASE: round 1 (issued across the merge start) failed"
  r=1
  while ! merged && [ $r -lt 3 ]; do
    r=$((r + 1))
    rw_round $r
    [ $r -lt 2 ] || { path_off $PDISK; note "delay off after round 2"; }
  done
  note "$r rounds"
  path_off $PDISK
  finish
  for x in $(cat /tmp/pairs); do
    p=${x%%:*}; rest=${x#*:}; i=${rest%%:*}; o=${rest#*:}
    o2=$( [ "$(sum_at /dev/mapper/base $p $CB)" = "$(sum_file /tmp/c1.$i)" ] && echo b-last || echo a-last)
    expect_eq "$CASE: pair $i at $p after the merge (read before: $o)" "$o2" "$o"
  done
}

# copyheld: origin writes held: the merge's copy back cannot land. The
# on-disk list is untouched, its entries point to data the origin does not
# have yet; reads of the batch come from the COW; a write to a chunk being
# copied waits for the copy.
op_copyheld() {
  start_merge
  wait_count o w 1 30
  sleep 1
  cow_list
  cmp_line "origin writes held: COW list $LIST"
  raw_is $TAIL 65536 /tmp/O.tail && cmp_line "origin writes held: raw origin at the tail still has the pre-merge data" ||
    fail "$CASE: the raw origin at the tail changed while origin writes were held"
  disk_check "origin writes held"
  chk "tail (being copied)" $TAIL 65536
  chk "area 0 (not yet merged)" $A0 65536
  chk "no exception" $NOEX 65536
  bgw $((TAIL + 3 * CB)) $CB ch.1
  sleep 1
  if [ -f /tmp/done.ch.1 ]; then cmp_line "write to a chunk being copied back: returned while the copy was held"
  else cmp_line "write to a chunk being copied back: waits while the copy is held"; fi
  chk "tail chunk 3 while its write waits" $((TAIL + 3 * CB)) $CB
  release o
  bg_ok ch.1; model_apply $((TAIL + 3 * CB)) ch.1
  chk "tail chunk 3 written" $((TAIL + 3 * CB)) $CB
  path_off o
  finish
}

# flushheld: the origin flush after the first copy held: the copy landed
# but is not durable, so the on-disk list must not shrink; a write to a
# copied chunk is released (dual write: both copies) or waits (upstream).
op_flushheld() {
  start_merge
  wait_count o f 1 30
  sleep 1
  cow_list
  cmp_line "origin flush held: COW list $LIST"
  raw_is $TAIL 65536 /tmp/S.tail && cmp_line "origin flush held: raw origin at the tail has the copied data" ||
    cmp_line "origin flush held: raw origin at the tail does not have the copied data"
  disk_check "origin flush held"
  chk "tail (copied, not committed)" $TAIL 65536
  chk "area 0" $A0 65536
  t=$(now_ms)
  bgw $((TAIL + 5 * CB)) $CB fh.1
  if bg_wait 2 fh.1; then
    note "write to a copied chunk returned in $(( $(now_ms) - t )) ms with the origin flush held"
    [ "$(cat /tmp/done.fh.1)" = ok ] || fail "$CASE: write to a copied chunk failed"
    model_apply $((TAIL + 5 * CB)) fh.1
    chk "copied chunk written" $((TAIL + 5 * CB)) $CB
    cow_list
    expect_eq "$CASE: raw origin and COW copy of the written chunk" "$(raw_equal $((TAIL + 5 * CB)))" same
    disk_check "origin flush held, after the write"
  else
    note "write to a copied chunk still waiting after 2 s with the origin flush held"
    chk "copied chunk, write waiting" $((TAIL + 5 * CB)) $CB
    disk_check "origin flush held, write waiting"
    model_apply $((TAIL + 5 * CB)) fh.1
  fi
  cow_list
  cmp_line "origin flush held, after the write: COW list $LIST"
  release o
  bg_ok fh.1
  chk "copied chunk after the release" $((TAIL + 5 * CB)) $CB
  path_off o
  finish
}

# dual: pairs of concurrent overlapping writes to the copied, uncommitted
# tail (origin flush held); the second set is released to the COW in one
# burst (COW write gate suspended while they are issued). A pair whose
# writes both returned before the commit must read the same before the
# commit and after the merge (no write in between), and the raw origin
# chunk must equal the COW copy its on-disk entry points to.
op_dual() {
  start_merge
  wait_count o f 1 30
  sleep 1
  bad=
  for i in 0 1 2 3 4 5; do dual_start $((TAIL + i * CB)) $i; done
  dmsetup suspend gcw
  for i in 6 7 8 9 10 11; do dual_start $((TAIL + i * CB)) $i; done
  sleep 1
  dmsetup resume gcw
  all="da.0 db.0 da.1 db.1 da.2 db.2 da.3 db.3 da.4 db.4 da.5 db.5 da.6 db.6 da.7 db.7 da.8 db.8 da.9 db.9 da.10 db.10 da.11 db.11"
  t=$(now_ms)
  bg_wait 2 $all || true
  n=0; for s in $all; do [ -f /tmp/done.$s ] && n=$((n + 1)); done
  note "$n of 24 writes returned within 2 s of the burst with the origin flush held"
  # Per pair, what a read must show now: both returned: either order
  # (kept, the read after the merge must agree); one returned: that write
  # over the snapshot's chunk; none: the snapshot's chunk.
  cow_list
  before=
  for i in 0 1 2 3 4 5 6 7 8 9 10 11; do
    off=$((TAIL + i * CB))
    for s in da.$i db.$i; do
      [ ! -f /tmp/done.$s ] || [ "$(cat /tmp/done.$s)" = ok ] || fail "$CASE: write $s failed"
    done
    if [ -f /tmp/done.da.$i ] && [ -f /tmp/done.db.$i ]; then
      o=$(dual_read $off $i)
      [ "$o" != neither ] || bad="$bad $i:neither"
    else
      slice /tmp/S $off $CB > /tmp/one.$i
      if [ -f /tmp/done.da.$i ]; then o=a-only; cp /tmp/w.da.$i /tmp/one.$i
      elif [ -f /tmp/done.db.$i ]; then o=b-only; patch_file /tmp/one.$i 1024 /tmp/w.db.$i
      else o=none; fi
      [ "$(sum_at /dev/mapper/base $off $CB)" = "$(sum_file /tmp/one.$i)" ] || bad="$bad $i:$o-misread"
    fi
    before="$before $o"
    e=$(raw_equal $off)
    [ "$e" != differ ] || bad="$bad $i:raw-origin-differs-from-COW-copy"
  done
  note "before the commit:$before"
  [ -z "$bad" ] || echo "FAIL: $CASE: with the origin flush held:$bad"
  [ "$n" != 24 ] || { ( disk_check "origin flush held, pairs written" ) || bad="$bad disk-image"; }
  release o
  bg_ok $all
  path_off o
  wait_merged base 240
  after=
  set -- $before
  for i in 0 1 2 3 4 5 6 7 8 9 10 11; do
    o=$(dual_read $((TAIL + i * CB)) $i); after="$after $o"
    [ "$o" != neither ] || bad="$bad $i:neither-after-the-merge"
    case $1 in a-last|b-last) [ "$o" = "$1" ] || bad="$bad $i:$1-before-the-commit-$o-after" ;; esac
    shift
  done
  note "after the merge:$after"
  [ -z "$bad" ] || fail "$CASE:$bad"
  finish
}

# cowflushheld: the COW flush of the first commit held: the origin flush
# is done, so the origin has the batch; whatever the list on disk says,
# the disk image is the model.
op_cowflushheld() {
  start_merge
  wait_count c f 1 30
  sleep 1
  cow_list
  note "COW flush held: COW list $LIST"
  raw_is $TAIL 65536 /tmp/S.tail && cmp_line "COW flush held: raw origin at the tail has the merged data" ||
    fail "$CASE: the first commit started before the origin had the tail"
  disk_check "COW flush held"
  chk "tail" $TAIL 65536
  chk "area 0" $A0 65536
  bgw $((TAIL + 6 * CB)) $CB cf.1
  if bg_wait 2 cf.1; then
    note "write to the committing batch returned with the COW flush held"
    bg_ok cf.1; model_apply $((TAIL + 6 * CB)) cf.1
    chk "committing chunk written" $((TAIL + 6 * CB)) $CB
    cow_list
    expect_eq "$CASE: raw origin and COW copy of the written chunk" "$(raw_equal $((TAIL + 6 * CB)))" "$(raw_equal $((TAIL + 6 * CB)) | grep -x gone || echo same)"
    disk_check "COW flush held, after the write"
  else
    note "write to the committing batch waits with the COW flush held"
    model_apply $((TAIL + 6 * CB)) cf.1
  fi
  release c
  bg_ok cf.1
  chk "committing chunk after the release" $((TAIL + 6 * CB)) $CB
  path_off c
  finish
}

# handover: the merging device suspended while its origin flush is
# delayed (no progress while suspended; a write sent meanwhile lands after
# the resume), and the identical snapshot-merge table loaded meanwhile
# (dmsetup reload, what lvchange --refresh does): upstream refuses it, "A
# snapshot is already merging."; if a module accepts it, the resume hands
# the merge over to it and the data must still be right.
op_handover() {
  start_merge
  wait_count o f 1 30
  t=$(now_ms)
  dmsetup suspend base
  note "suspend took $(( $(now_ms) - t )) ms"
  s1=$(dmsetup status base)
  bgw $NOEX $CB su.1
  sleep 1
  s2=$(dmsetup status base)
  expect_eq "$CASE: no progress while suspended" "$s2" "$s1"
  [ ! -f /tmp/done.su.1 ] || fail "$CASE: a write returned while the device was suspended"
  disk_check "suspended"
  dmesg -c > /dev/null
  if dmsetup load base --table "$MERGE_TABLE" 2>/dev/null; then
    cmp_line "reload with the same snapshot-merge table: accepted"
  else
    dmesg | grep -q "A snapshot is already merging." &&
      cmp_line "reload with the same snapshot-merge table: refused, A snapshot is already merging." ||
      cmp_line "reload with the same snapshot-merge table: refused: $(dmesg | grep -i device-mapper | tail -1 | sed 's/^\[[^]]*\] //')"
  fi
  path_off o
  dmsetup resume base
  bg_ok su.1; model_apply $NOEX su.1
  chk "written while suspended" $NOEX $CB
  chk "tail" $TAIL 65536
  chk "area 0" $A0 65536
  mw $((A1 + CB)) $CB ho.1; chk "area 1 written after the resume" $((A1 + CB)) $CB
  finish
}

# suspenddrain: the merging device suspended (lvchange -an, a table
# reload) while a merge copy's origin write is held: the suspend waits for
# the copy (upstream: stop_merge waits for the running merge); once it
# returns nothing more reaches either disk, and the disks are the model.
op_suspenddrain() {
  start_merge
  wait_count o w 1 30
  rm -f /tmp/done.susp
  ( dmsetup suspend base && echo ok > /tmp/done.susp || echo err > /tmp/done.susp ) > /dev/null 2>&1 &
  echo $! >> /tmp/bgpids
  sleep 1.5
  # The raw disks are sampled as soon as the suspend has returned: before
  # the release if it did not wait.
  early=
  if [ -f /tmp/done.susp ]; then
    cmp_line "suspend with a merge copy held: returned while the copy was held"
    early=1; o1=$(sum_at /dev/vda 0 $OSZ); c1=$(sum_at /dev/vdc 0 $((CSEC * 512)))
  else
    cmp_line "suspend with a merge copy held: waits for the copy"
  fi
  t=$(now_ms)
  release o
  bg_wait 30 susp || fail "$CASE: the suspend did not return after the copy was released"
  [ "$(cat /tmp/done.susp)" = ok ] || fail "$CASE: dmsetup suspend failed"
  [ -n "$early" ] || note "suspend returned $(( $(now_ms) - t )) ms after the release"
  [ -n "$early" ] || { o1=$(sum_at /dev/vda 0 $OSZ); c1=$(sum_at /dev/vdc 0 $((CSEC * 512))); }
  sleep 1
  expect_eq "$CASE: raw origin unchanged since the suspend returned" "$(sum_at /dev/vda 0 $OSZ)" "$o1"
  expect_eq "$CASE: raw COW unchanged since the suspend returned" "$(sum_at /dev/vdc 0 $((CSEC * 512)))" "$c1"
  disk_check "suspended after the held copy"
  raw_is $TAIL 65536 /tmp/S.tail && cmp_line "suspended: raw origin at the tail has the copied data" ||
    cmp_line "suspended: raw origin at the tail does not have the copied data"
  dmsetup resume base
  chk "tail after the resume" $TAIL 65536
  mw $((A2 + 7 * CB)) $CB sd.1; chk "area 2 written after the resume" $((A2 + 7 * CB)) $CB
  finish
}

# reactivate: LVM deactivates the merging origin (linear) mid-merge with
# origin writes delayed, then activates it again: the merge restarts from
# the disks.
op_reactivate() {
  start_merge
  wait_count o w 1 30
  sleep 0.5
  t=$(now_ms)
  dmsetup suspend base
  dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
  dmsetup resume base
  note "deactivation took $(( $(now_ms) - t )) ms"
  disk_check "deactivated mid-merge"
  path_off o
  dmsetup suspend base
  dmsetup load base --table "$MERGE_TABLE"
  dmsetup resume base
  chk "tail after reactivation" $TAIL 65536
  chk "area 0 after reactivation" $A0 65536
  mw $((A2 + 3 * CB)) $CB ra.1; chk "area 2 written" $((A2 + 3 * CB)) $CB
  finish
}

# fail: COW writes fail (all, or only area 1's) from the first commit on:
# "Merge failed", reads still the model, the disk image still the model
# (also after writes to chunks of areas 0, 1 and 2), then the COW is
# repaired and a reactivation finishes the merge.
op_fail() {
  path_on o f hold
  start_merge
  wait_count o f 1 30
  if [ "$PHOW" = flakey ]; then
    dmsetup load gcw --table "0 $CSEC flakey /dev/vdc 0 0 1 1 error_writes"
  else
    a1=$(( (1 + 1 * (EPA + 1)) * CH ))
    printf '%s\n' "0 $a1 linear /dev/vdc 0" "$a1 $CH flakey /dev/vdc $a1 0 1 1 error_writes" \
      "$((a1 + CH)) $((CSEC - a1 - CH)) linear /dev/vdc $((a1 + CH))" > /tmp/gcw.table
    dmsetup load gcw /tmp/gcw.table
  fi
  dmsetup resume gcw
  release o
  i=0
  while :; do
    st=$(dmsetup status base | cut -d' ' -f4-)
    [ "$st" = "Merge failed" ] && break
    i=$((i + 1)); [ $i -lt 600 ] || fail "$CASE: no 'Merge failed' after 60 s: $st"
    merged && fail "$CASE: the merge finished although COW writes fail"
    sleep 0.1
  done
  cmp_line "after the COW write error: $(dmsetup status base); raw COW header $(cow_header)"
  dmesg | grep -i "merge" | tail -2
  path_off o
  chk "tail" $TAIL 65536
  chk "area 1" $A1 65536
  chk "area 2" $A2 65536
  chk "area 0" $A0 65536
  disk_check "merge failed"
  for w in "$A0 fl.0" "$((A1 + 5 * CB)) fl.1" "$((A2 + 5 * CB)) fl.2" "$((NOEX + CB)) fl.n"; do
    off=${w% *}; s=${w#* }
    gen $s $CB > /tmp/w.$s
    if $DD if=/tmp/w.$s of=/dev/mapper/base bs=$CB seek=$off oflag=direct,seek_bytes conv=notrunc 2>/dev/null; then
      cmp_line "write after the failure at $off: ok"; model_apply $off $s
    else
      cmp_line "write after the failure at $off: error"
    fi
    chk "after the write at $off" $off $CB
  done
  bad=
  ( disk_check "merge failed, after the writes" ) || bad="the disk image lost acknowledged writes"
  # Repair the COW and reactivate (LVM: deactivate, activate).
  dmsetup suspend base
  dmsetup load base --table "0 $OSEC linear /dev/mapper/base-real 0"
  dmsetup resume base
  dmsetup load gcw --table "$(gate_table /dev/vdc)"
  dmsetup resume gcw
  [ -n "$bad" ] || disk_check "deactivated after the failure"
  dmsetup suspend base
  dmsetup load base --table "$MERGE_TABLE"
  dmsetup resume base
  finish
  [ -z "$bad" ] || fail "$CASE: $bad"
}

run_case() {  # MODULE CASE DISK CLASS HOW OP
  M=$1 CASE=$2 PDISK=$3 PCLASS=$4 PHOW=$5
  rm -f /tmp/$M.$CASE.cmp /tmp/done.*
  local t; t=$(now_ms)
  setup
  note "setup took $(( $(now_ms) - t )) ms"
  path_on $PDISK $PCLASS $PHOW
  op_$6
}

cleanup() {
  local d
  for d in gcw base; do dmsetup resume $d 2>/dev/null || true; done
  for d in o c; do set_delay $d 0 0 0 2>/dev/null || true; done
  [ ! -s /tmp/bgpids ] || { sleep 1; kill $(cat /tmp/bgpids) 2>/dev/null || true; sleep 0.2; }
  : > /tmp/bgpids
  for d in base snap base-cow base-real pvo pvc gcw; do dmsetup remove $d 2>/dev/null || true; done
  dmsetup remove_all --force >/dev/null 2>&1 || true
  unload_modules
}

# ---- main ----
grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
grep -q '^dm_flakey ' /proc/modules || insmod /modules/dm-flakey.ko
gen fill $OSZ > /tmp/fill
gen up 3145728 > /tmp/up
gen snapw 65536 > /tmp/sw
cp /tmp/fill /tmp/S; patch_file /tmp/S $TAIL /tmp/sw
cp /tmp/fill /tmp/O; patch_file /tmp/O 0 /tmp/up
slice /tmp/O $TAIL 65536 > /tmp/O.tail
slice /tmp/S $TAIL 65536 > /tmp/S.tail
# Disks: vda (origin) and vdc (COW) are rewritten from the golden copies
# on vdb and vdd before every case; nothing is assumed zero.
: > /tmp/bgpids
: > /tmp/verdicts
tstart=$(now_ms)
M=upstream CASE=golden
make_golden
note "golden disks made in $(( $(now_ms) - tstart )) ms"
echo "$CASES" > /tmp/cases
while read -r name disk class how op <&3; do
  [ -n "$name" ] || continue
  if [ -n "$ONLY" ]; then case " $ONLY " in *" $name "*) ;; *) continue ;; esac; fi
  for m in upstream rs; do
    echo "=== case $name ($disk $class $how, $op) on $m"
    t=$(now_ms)
    rm -f /tmp/case.ok
    set +e
    ( set -e; run_case $m $name $disk $class $how $op; echo ok > /tmp/case.ok ) < /dev/null 2>&1 | tee /tmp/case.log
    set -e
    ( cleanup ) > /tmp/cleanup.log 2>&1 || { cat /tmp/cleanup.log; echo "cleanup after $name on $m failed"; }
    secs=$(( ($(now_ms) - t) / 1000 ))
    if [ -f /tmp/case.ok ]; then
      echo "CASE $name $m PASS (${secs}s)" | tee -a /tmp/verdicts
    else
      echo "CASE $name $m FAIL (${secs}s): $(grep -m1 '^FAIL' /tmp/case.log || tail -1 /tmp/case.log)" | tee -a /tmp/verdicts
    fi
  done
  if [ -f /tmp/upstream.$name.cmp ] && [ -f /tmp/rs.$name.cmp ]; then
    if cmp -s /tmp/upstream.$name.cmp /tmp/rs.$name.cmp; then
      echo "CASE $name compare PASS" | tee -a /tmp/verdicts
    else
      diff /tmp/upstream.$name.cmp /tmp/rs.$name.cmp | sed 's/^/  /'
      echo "CASE $name compare FAIL: upstream and rs recorded different cmp: lines" | tee -a /tmp/verdicts
    fi
  else
    echo "CASE $name compare FAIL: a module did not get to the end" | tee -a /tmp/verdicts
  fi
done 3< /tmp/cases
echo "=== race-merge: $(( ($(now_ms) - tstart) / 1000 ))s for all cases"
cat /tmp/verdicts
if grep -q ' FAIL' /tmp/verdicts; then
  fail "race-merge: failing cases: $(grep ' FAIL' /tmp/verdicts | awk '{ print $2 "/" $3 }' | tr '\n' ' ')"
fi

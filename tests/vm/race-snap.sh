# SPDX-License-Identifier: GPL-2.0
# Race windows of the snapshot and origin I/O paths, made seconds wide with
# dm-delay under ONE path at a time: origin reads (oread), origin writes
# (owrite), COW reads (cread), COW writes (cwrite) or COW flushes (cflush).
# Each case of the table below runs on upstream's module and on this one
# (same boot, same disks), with background I/O (`&`) ordered by `sleep`
# inside the delay window, and checks:
#  - the data every read returned, against a model (original, new, ...);
#  - the final origin (through snapshot-origin and raw) and snapshot
#    contents against the models (delays off by then);
#  - ordering points inside the window (raw origin still original while
#    its copy is not committed, the raw COW header at an ack, ...);
#  - status lines and the raw COW header and first exception area: these
#    are recorded per case and must be identical on both modules.
# Every case runs, prints its verdict, and the scenario fails at the end
# if any did. Durations are only reported ("measured"), never asserted.
# Ordering rules checked (Documentation/design.md, "Ordering rules"):
#  rule 1, snapshot reads drained before the origin write is released:
#    read_snapfull, read_snappart, read_overlap, owrite_copy;
#  rule 2, copy and area entry durable before the origin write:
#    owrite_copy, cwrite_owrite, held_owrite, cflush_commit;
#  rule 3, valid=0 on disk before the origin write that invalidated:
#    overflow_cwrite, overflow_copy, overflow_flight;
#  an origin suspend drains writes held below the target, and writes
#  queued meanwhile are copied into a snapshot loaded meanwhile:
#    held_owrite, newsnap_cwrite, reload_cread.
# race.cases=a,b on the kernel command line (VM_APPEND) runs only those.
# (Merge races: race-merge.sh.)
. /tests/lib.sh

C=4096                  # chunk (8 sectors) in bytes
OS=512                  # origin sectors: 64 chunks
OB=$((OS * 512))
WINDOWS="0:$OB"         # the models mo (origin) and ms (snapshot)

# The case table. name: c_NAME runs it; path: the delayed path; ms: its
# delay; cow: COW sectors; store: P or PO; then what it does and checks.
cat > /tmp/race.cases <<'EOF'
read_snapfull   oread  6000 2048 P  bug 1: snapshot read of chunk 0 in flight, full-chunk snapshot write to chunk 0 (no copy), then an origin write to chunk 0: the read returns the original data
read_snappart   oread  4000 2048 P  bug 1, the snapshot write is 512 B (copy from the origin, issued 1 s before the read): the read returns the original data
read_overlap    oread  4000 2048 P  bug 1, the origin write covers chunks 0 and 1 (4 KiB at 2 KiB; chunk 1 already copied): the read returns the original data
overflow_cwrite cwrite 3000 24   P  bug 2: COW of 3 chunks; origin write to chunk 0, then to chunk 1 (overflow): valid=0 is on disk when that write returns; Invalid
owrite_copy     oread  3000 2048 P  origin write to chunk 0 (copy in flight), snapshot read of chunk 0, origin write over chunks 0-1: origin held until copied, read original
overflow_copy   oread  3000 24   P  COW of 3 chunks; origin write to chunk 0 (copy in flight), then to chunk 1 (overflow): valid=0 on disk at its return, both writes land
held_owrite     owrite 3000 2048 P  origin write held below the target after its copy: COW entry and data already on disk; new snapshot (origin suspended) sees the write
cread_remapped  cread  3000 2048 P  snapshot reads of remapped chunks in flight; origin write to a remapped chunk and a partial snapshot write go by; reads return the COW data
reload_cread    cread  3000 2048 P  snapshot table reloaded with the origin suspended (metadata reads delayed), origin write queued meanwhile: copied into the reloaded snapshot
cwrite_owrite   cwrite 3000 2048 P  origin writes to chunk 0 and over chunks 0-1, copies in flight: raw origin original until committed, snapshot read original
overflow_flight cwrite 3000 24   P  COW of 3 chunks; origin write to chunk 1 overflows while chunk 0's copy is in flight: valid=0 on disk at its return, both writes land
po_overflow     cwrite 3000 24   PO COW of 3 chunks, PO; full snapshot write in flight, a second one overflows: EIO, Overflow, the first lands, header stays valid
newsnap_cwrite  cwrite 3000 2048 P  origin write copying into snapshot 1 (COW writes delayed); new snapshot created with the origin suspended: it sees the write
cflush_commit   cflush 3000 2048 P  COW flushes delayed: origin write and full snapshot write wait for the commit; raw origin original meanwhile
EOF

# ---- helpers ----
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
T0=0
mark() { T0=$(now_ms); }
el() { echo $(( $(now_ms) - T0 )); }

# io NAME r|w DEV OFF LEN|FILE: one O_DIRECT read (LEN bytes) or write (of
# FILE) at byte offset OFF. Leaves /tmp/io.NAME.rc = "RC START END" (ms
# since mark) and, for a read, the data in /tmp/io.NAME.data. Run it with
# `&` for background I/O. A NAME is used once per case (run_case clears
# the files before the case starts, not io: a background io would race).
io() {
  local n=$1 k=$2 dev=$3 off=$4 a=$5 s rc
  s=$(el)
  if [ "$k" = r ]; then
    $DD if="$dev" of=/tmp/io.$n.data bs="$a" count=1 skip="$off" iflag=direct,skip_bytes 2>/dev/null && rc=0 || rc=1
  else
    # bs = the file size: coreutils dd turns O_DIRECT off for a write
    # shorter than bs, and a buffered partial write becomes a page-cache
    # read-modify-write of whole pages.
    $DD if="$a" of="$dev" bs=$(stat -c %s "$a") count=1 seek="$off" oflag=direct,seek_bytes conv=notrunc 2>/dev/null && rc=0 || rc=1
  fi
  echo "$rc $s $(el)" > /tmp/io.$n.rc
}
acked() { if [ -f /tmp/io.$1.rc ]; then echo yes; else echo no; fi; }
rc_of() { if [ -f /tmp/io.$1.rc ]; then set -- $(cat /tmp/io.$1.rc); [ "$1" = 0 ] && echo ok || echo EIO; else echo pending; fi; }

# waitio NAME...: wait (at most 90 s) until every named I/O returned.
waitio() {
  local n t=0 all
  while :; do
    all=1
    for n in "$@"; do [ -f /tmp/io.$n.rc ] || all=0; done
    [ $all = 1 ] && break
    t=$((t + 1))
    if [ $t -gt 900 ]; then
      for n in "$@"; do [ -f /tmp/io.$n.rc ] || bad "I/O $n never returned"; done
      HUNG=1; return 0
    fi
    sleep 0.1
  done
  for n in "$@"; do set -- $(cat /tmp/io.$n.rc); meas "$n: $1 $(( $3 - $2 ))ms (t=$2..$3)"; done
}

# returned NAME LABEL=FILE...: which FILE the read NAME returned.
returned() {
  local n=$1 p; shift
  [ "$(rc_of $n)" = ok ] || { rc_of $n; return 0; }
  for p in "$@"; do cmp -s /tmp/io.$n.data "${p#*=}" && { echo "${p%%=*}"; return 0; }; done
  echo "other data"
}

# Verdict bookkeeping: a case's failures go to /tmp/M.CASE.fails, what must
# match upstream to /tmp/M.CASE.rec, measurements to /tmp/M.CASE.meas.
bad() { echo "FAIL: $M $CASE: $*" | tee -a /tmp/$M.$CASE.fails; }
want() { [ "$2" = "$3" ] || bad "$1: got '$2', want '$3'"; }
rec() { echo "  [$M $CASE] $*"; echo "$*" >> /tmp/$M.$CASE.rec; }
meas() { echo "$*" >> /tmp/$M.$CASE.meas; }

# chk_read NAME WHAT WANT LABEL=FILE...: record and check what read NAME returned.
chk_read() {
  local n=$1 what=$2 w=$3 got; shift 3
  got=$(returned $n "$@")
  rec "$what returned: $got"
  want "$what" "$got" "$w"
}
chk_ok() { want "$2 ($1)" "$(rc_of $1)" ok; }

# Raw COW (under the delay device): header words (magic valid version
# chunk), the first exception area (old->new), one data chunk.
hdr() { read_at /dev/vdc 0 512 | head -c 16 | od -An -tx4 | tr -s ' ' | sed 's/^ //'; }
valid_field() { set -- $(hdr); echo "$2"; }
area() { read_at /dev/vdc $C $C | od -An -v -tu8 | awk '$2 != 0 { printf "%s%s->%s", s, $1, $2; s = " " }'; }
# new_of OLD: the COW chunk of OLD in the raw area ("" if none).
new_of() { area | tr ' ' '\n' | sed -n "s/^$1->//p"; }
st() { dmsetup status "$1" | cut -d' ' -f4-; }
raw_origin_sum() { sum_at /dev/vda "$1" "$2"; }
orig_sum() { $DD if=/tmp/orig.img bs=512 skip=$(($1 / 512)) count=$(($2 / 512)) 2>/dev/null | $SUM | cut -d' ' -f1; }

# The stack: odly (delay over /dev/vda) is the origin; cdly (delay over
# /dev/vdc) the COW; snap and base (snapshot-origin) over them. Delays
# are 0 until delay_on.
table_of() {  # PATH MS: "DEVICE TABLE"
  case $1 in
    none)   echo "odly 0 $OS delay /dev/vda 0 0" ;;
    cnone)  echo "cdly 0 $COWS delay /dev/vdc 0 0" ;;
    oread)  echo "odly 0 $OS delay /dev/vda 0 $2 /dev/vda 0 0 /dev/vda 0 0" ;;
    owrite) echo "odly 0 $OS delay /dev/vda 0 0 /dev/vda 0 $2 /dev/vda 0 0" ;;
    cread)  echo "cdly 0 $COWS delay /dev/vdc 0 $2 /dev/vdc 0 0 /dev/vdc 0 0" ;;
    cwrite) echo "cdly 0 $COWS delay /dev/vdc 0 0 /dev/vdc 0 $2 /dev/vdc 0 0" ;;
    cflush) echo "cdly 0 $COWS delay /dev/vdc 0 0 /dev/vdc 0 0 /dev/vdc 0 $2" ;;
    *) fail "unknown path $1" ;;
  esac
}
reload() {  # "DEVICE TABLE"
  local d=${1%% *}
  dmsetup suspend "$d"; dmsetup load "$d" --table "${1#* }"; dmsetup resume "$d"
}
delay_on() { reload "$(table_of $PATH_ $MS)"; }
# delay_off: only read delays slow the final checks down.
delay_off() {
  case $PATH_ in oread) reload "$(table_of none)" ;; cread) reload "$(table_of cnone)" ;; esac
}

setup() {  # COW_SECTORS STORE
  COWS=$1
  $DD if=/dev/zero of=/dev/vdc bs=$C count=2 oflag=direct conv=notrunc 2>/dev/null
  write_at /dev/vda 0 /tmp/orig.img
  cp /tmp/orig.img /tmp/mo.0; cp /tmp/orig.img /tmp/ms.0
  dmsetup create odly --table "${TBL_NONE#* }"
  dmsetup create cdly --table "0 $COWS delay /dev/vdc 0 0"
  dmsetup create snap --table "0 $OS snapshot /dev/mapper/odly /dev/mapper/cdly $2 8"
  dmsetup create base --table "0 $OS snapshot-origin /dev/mapper/odly"
}

# cow2 CHUNK: a second snapshot, snap2, on /dev/vdd (no delay), created
# as LVM does: origin suspended around it. Its model is ms2 (the origin now).
newsnap() {
  $DD if=/dev/zero of=/dev/vdd bs=$C count=2 oflag=direct conv=notrunc 2>/dev/null
  dmsetup create cow2 --table "0 2048 linear /dev/vdd 0"
  dmsetup create snap2 --table "0 $OS snapshot /dev/mapper/odly /dev/mapper/cow2 P $1"
}

# teardown: remove the stack; after a failed case, background I/O may
# still hold a device for a while.
teardown() {
  local d t
  for d in base snap snap2 cow2 odly cdly; do
    dmsetup info "$d" >/dev/null 2>&1 || continue
    t=0
    until dmsetup remove "$d" 2>/dev/null; do
      t=$((t + 1))
      if [ $t -gt 30 ]; then
        echo "  (teardown: $d busy, forcing)"; dmsetup remove --force "$d" 2>/dev/null || true; break
      fi
      sleep 0.5
    done
  done
}

# Final checks, delays off: the origin (through base and raw) reads as mo,
# the snapshot as ms (or EIO when SNAP_INVALID=1), snap2 as ms2; status
# lines and the raw COW header and area are recorded.
final() {
  delay_off
  want "origin through snapshot-origin" "$(sum_at /dev/mapper/base 0 $OB)" "$(sum_file /tmp/mo.0)"
  want "raw origin" "$(raw_origin_sum 0 $OB)" "$(sum_file /tmp/mo.0)"
  if [ "${SNAP_INVALID:-0}" = 1 ]; then
    if read_fails /dev/mapper/snap 0 $C; then rec "snapshot read: EIO"; else bad "invalid snapshot readable"; fi
  else
    want "snapshot" "$(sum_at /dev/mapper/snap 0 $OB)" "$(sum_file /tmp/ms.0)"
  fi
  rec "status: $(st snap)"
  if dmsetup info snap2 >/dev/null 2>&1; then
    want "snapshot 2" "$(sum_at /dev/mapper/snap2 0 $OB)" "$(sum_file /tmp/ms2.0)"
    rec "status snap2: $(st snap2)"
  fi
  rec "COW header: $(hdr)"
  rec "COW area: $(area)"
}

# ---- the cases (after setup; the runner then waits, runs final, tears down) ----

# Bug 1 and its variants: a snapshot read of chunk 0 goes to the origin
# (reads delayed); a snapshot write to chunk 0 creates its exception, and
# an origin write to chunk 0 is held on it. The origin write must not
# reach the origin before the read has drained.
bug1_checks() {  # SNAPWRITE_OFF SNAPWRITE_FILE ORIGINWRITE_OFF
  waitio r1 w1 w2
  patch_file /tmp/ms.0 $1 $2; patch_file /tmp/mo.0 $3 /tmp/d.O
  chk_read r1 "snapshot read of chunk 0 in flight" original original=/tmp/o.0 origin-new=/tmp/d.O \
    snapshot-new=/tmp/d.S snapshot-new-512B=/tmp/o.0P origin-new-at-2K=/tmp/o.0mix
  chk_ok w1 "snapshot write"; chk_ok w2 "origin write"
}
# The read, 1 s later the full-chunk snapshot write (no copy: its exception
# is complete at once), 0.5 s later the origin write.
bug1() {  # SNAPWRITE_OFF SNAPWRITE_FILE ORIGINWRITE_OFF
  delay_on; mark
  io r1 r /dev/mapper/snap 0 $C &
  sleep 1
  io w1 w /dev/mapper/snap $1 $2 &
  sleep 0.5
  io w2 w /dev/mapper/base $3 /tmp/d.O &
  bug1_checks "$@"
}
c_read_snapfull() { bug1 0 /tmp/d.S 0; }
# Chunk 1 has its exception already, so the part of the origin write that
# falls in chunk 1 needs no copy (with one, it would be held for 4 s).
c_read_overlap() {
  io p1 w /dev/mapper/snap $C /tmp/d.B; chk_ok p1 "prep snapshot write"
  patch_file /tmp/ms.0 $C /tmp/d.B
  bug1 0 /tmp/d.S 2048
}
# A partial snapshot write copies chunk 0 from the origin, whose reads are
# delayed too: issued after the read, the copy would end after it. So the
# write comes first, the read 1 s later (it ends 1 s after the copy), the
# origin write 0.5 s after that.
c_read_snappart() {
  delay_on; mark
  io w1 w /dev/mapper/snap 1024 /tmp/d.P &
  sleep 1
  io r1 r /dev/mapper/snap 0 $C &
  sleep 0.5
  io w2 w /dev/mapper/base 0 /tmp/d.O &
  bug1_checks 1024 /tmp/d.P 0
}

# Bug 2: the invalidation (valid=0 in the header) must be written before
# the origin write that caused it returns.
c_overflow_cwrite() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.A
  rec "after the chunk 0 write: header $(hdr), area $(area)"
  io w2 w /dev/mapper/base $C /tmp/d.B
  rec "when the overflowing origin write returned: header valid=$(valid_field), status $(st snap)"
  want "COW header valid field when the overflowing origin write returned" "$(valid_field)" 00000000
  waitio w1 w2
  chk_ok w1 "origin write chunk 0"; chk_ok w2 "overflowing origin write"
  patch_file /tmp/mo.0 0 /tmp/d.A; patch_file /tmp/mo.0 $C /tmp/d.B
  SNAP_INVALID=1
}

# Origin reads delayed: the copy of chunk 0 is in flight for 3 s.
c_owrite_copy() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.H &       # 2 KiB at 0: copy of chunk 0 starts
  sleep 0.5
  io r1 r /dev/mapper/snap 0 $C &             # pending exception only: read from the origin
  sleep 0.5
  io w2 w /dev/mapper/base 2048 /tmp/d.O &    # rest of chunk 0 (held) + half of chunk 1 (copy)
  sleep 0.5
  want "raw origin chunks 0-1 while their copies are in flight" "$(raw_origin_sum 0 $((2 * C)))" "$(orig_sum 0 $((2 * C)))"
  rec "mid-window: acked w1=$(acked w1) w2=$(acked w2)"
  waitio w1 r1 w2
  patch_file /tmp/mo.0 0 /tmp/d.H; patch_file /tmp/mo.0 2048 /tmp/d.O
  chk_read r1 "snapshot read of chunk 0 during its copy" original original=/tmp/o.0 w1=/tmp/mo.0
  chk_ok w1 "origin write"; chk_ok w2 "overlapping origin write"
}

# overflow while a copy is in flight (origin reads or COW writes delayed).
overflow_in_flight() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.A &
  sleep 1
  io w2 w /dev/mapper/base $C /tmp/d.B
  rec "when the overflowing origin write returned: header valid=$(valid_field), status $(st snap)"
  want "COW header valid field when the overflowing origin write returned" "$(valid_field)" 00000000
  waitio w1 w2
  chk_ok w1 "origin write with copy in flight"; chk_ok w2 "overflowing origin write"
  patch_file /tmp/mo.0 0 /tmp/d.A; patch_file /tmp/mo.0 $C /tmp/d.B
  SNAP_INVALID=1
}
c_overflow_copy() { overflow_in_flight; }
c_overflow_flight() { overflow_in_flight; }

# Origin writes delayed: the write is held below the target, after its
# copy was committed.
c_held_owrite() {
  local n
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.A &
  sleep 1
  rec "mid-window: acked w1=$(acked w1), area $(area)"
  n=$(new_of 0)
  if [ -z "$n" ]; then bad "no exception for chunk 0 on disk while its origin write is in flight"
  else want "raw COW copy of chunk 0 while its origin write is in flight" "$(sum_at /dev/vdc $((n * C)) $C)" "$(sum_file /tmp/o.0)"; fi
  io r1 r /dev/mapper/snap 0 $C
  chk_read r1 "snapshot read of chunk 0 while the origin write is held" original original=/tmp/o.0 new=/tmp/d.A
  dmsetup suspend base
  want "raw origin chunk 0 when the origin suspend returned (drained)" "$(raw_origin_sum 0 $C)" "$(sum_file /tmp/d.A)"
  patch_file /tmp/mo.0 0 /tmp/d.A; cp /tmp/mo.0 /tmp/ms2.0
  newsnap 16
  dmsetup resume base
  io w2 w /dev/mapper/base 0 /tmp/d.B &
  io w3 w /dev/mapper/base $((2 * C)) /tmp/d.D &
  waitio w1 w2 w3
  chk_ok w1 "origin write"; chk_ok w2 "origin write after the new snapshot"; chk_ok w3 "origin write to chunk 2"
  patch_file /tmp/mo.0 0 /tmp/d.B; patch_file /tmp/mo.0 $((2 * C)) /tmp/d.D
}

# COW reads delayed: reads of remapped chunks are in flight for 3 s.
c_cread_remapped() {
  io p1 w /dev/mapper/snap 0 /tmp/d.S; chk_ok p1 "prep snapshot write"
  io p2 w /dev/mapper/base $((2 * C)) /tmp/d.A; chk_ok p2 "prep origin write"
  patch_file /tmp/ms.0 0 /tmp/d.S; patch_file /tmp/mo.0 $((2 * C)) /tmp/d.A
  delay_on; mark
  io r1 r /dev/mapper/snap 0 $C &
  io r2 r /dev/mapper/snap $((2 * C)) $C &
  sleep 1
  io w1 w /dev/mapper/base 0 /tmp/d.O
  rec "r1 returned when the origin write to its chunk returned: $(acked r1)"
  io w2 w /dev/mapper/snap $((3 * C + 1024)) /tmp/d.P
  rec "r1 returned when the partial snapshot write returned: $(acked r1)"
  waitio r1 r2 w1 w2
  patch_file /tmp/mo.0 0 /tmp/d.O; patch_file /tmp/ms.0 $((3 * C + 1024)) /tmp/d.P
  chk_read r1 "snapshot read of remapped chunk 0" snapshot-data snapshot-data=/tmp/d.S origin-new=/tmp/d.O original=/tmp/o.0
  chk_read r2 "snapshot read of copied chunk 2" original original=/tmp/o.2 origin-new=/tmp/d.A
  chk_ok w1 "origin write"; chk_ok w2 "partial snapshot write"
}

c_reload_cread() {
  local t
  io p1 w /dev/mapper/base 0 /tmp/d.A; chk_ok p1 "prep origin write"
  io p2 w /dev/mapper/snap $C /tmp/d.S; chk_ok p2 "prep snapshot write"
  patch_file /tmp/mo.0 0 /tmp/d.A; patch_file /tmp/ms.0 $C /tmp/d.S
  delay_on; mark
  dmsetup suspend base
  dmsetup remove snap
  ( if dmsetup create snap --table "0 $OS snapshot /dev/mapper/odly /dev/mapper/cdly P 8"; then echo "0 $(el)"; else echo "1 $(el)"; fi > /tmp/create.tmp
    mv /tmp/create.tmp /tmp/create.rc ) &
  sleep 1
  io w1 w /dev/mapper/base $((2 * C)) /tmp/d.B &
  sleep 0.5
  rec "mid-window: origin write acked while the origin is suspended: $(acked w1)"
  t=0; while [ ! -f /tmp/create.rc ] && [ $t -lt 600 ]; do sleep 0.1; t=$((t + 1)); done
  set -- $(cat /tmp/create.rc 2>/dev/null || echo "none")
  want "reloaded snapshot table created" "$1" 0
  meas "create: ${2:-?}ms"
  dmsetup resume base
  waitio w1
  chk_ok w1 "origin write queued during the reload"
  patch_file /tmp/mo.0 $((2 * C)) /tmp/d.B
}

# COW writes delayed: copies and commits take 3 s each.
c_cwrite_owrite() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.H &
  sleep 1
  want "raw origin chunk 0 while its copy is in flight" "$(raw_origin_sum 0 $C)" "$(orig_sum 0 $C)"
  io r1 r /dev/mapper/snap 0 $C
  io w2 w /dev/mapper/base 2048 /tmp/d.O &
  sleep 0.5
  want "raw origin chunks 0-1 while their copies are in flight" "$(raw_origin_sum 0 $((2 * C)))" "$(orig_sum 0 $((2 * C)))"
  rec "mid-window: acked w1=$(acked w1) w2=$(acked w2)"
  waitio w1 r1 w2
  chk_read r1 "snapshot read of chunk 0 during its copy" original original=/tmp/o.0
  chk_ok w1 "origin write"; chk_ok w2 "overlapping origin write"
  patch_file /tmp/mo.0 0 /tmp/d.H; patch_file /tmp/mo.0 2048 /tmp/d.O
}

c_po_overflow() {
  delay_on; mark
  io w1 w /dev/mapper/snap 0 /tmp/d.S &
  sleep 1
  io w2 w /dev/mapper/snap $C /tmp/d.D
  rec "overflowing snapshot write: $(rc_of w2); then: status $(st snap), header $(hdr), acked w1=$(acked w1)"
  want "overflowing snapshot write" "$(rc_of w2)" EIO
  waitio w1 w2
  chk_ok w1 "snapshot write in flight"
  patch_file /tmp/ms.0 0 /tmp/d.S
}

c_newsnap_cwrite() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.A &
  sleep 1
  dmsetup suspend base
  meas "suspend returned at $(el)ms"
  want "raw origin chunk 0 when the origin suspend returned (drained)" "$(raw_origin_sum 0 $C)" "$(sum_file /tmp/d.A)"
  rec "raw COW area when the origin suspend returned: $(area)"
  patch_file /tmp/mo.0 0 /tmp/d.A; cp /tmp/mo.0 /tmp/ms2.0
  newsnap 8
  dmsetup resume base
  io w2 w /dev/mapper/base 0 /tmp/d.B
  waitio w1 w2
  chk_ok w1 "origin write"; chk_ok w2 "origin write after the new snapshot"
  patch_file /tmp/mo.0 0 /tmp/d.B
}

# COW flushes delayed: the commit (PREFLUSH) holds both writes.
c_cflush_commit() {
  delay_on; mark
  io w1 w /dev/mapper/base 0 /tmp/d.A &
  sleep 0.3
  io w2 w /dev/mapper/snap $((2 * C)) /tmp/d.S &
  sleep 1
  want "raw origin chunk 0 while its commit waits for the flush" "$(raw_origin_sum 0 $C)" "$(orig_sum 0 $C)"
  rec "mid-window: acked w1=$(acked w1) w2=$(acked w2), area $(area)"
  waitio w1 w2
  chk_ok w1 "origin write"; chk_ok w2 "full snapshot write"
  patch_file /tmp/mo.0 0 /tmp/d.A; patch_file /tmp/ms.0 $((2 * C)) /tmp/d.S
}

# ---- runner ----
run_case() {  # NAME PATH MS COW STORE (in a background subshell)
  CASE=$1 PATH_=$2 MS=$3 SNAP_INVALID=0 HUNG=0
  : > /tmp/$M.$CASE.fails; : > /tmp/$M.$CASE.rec; : > /tmp/$M.$CASE.meas
  rm -f /tmp/ms2.0 /tmp/io.* /tmp/create.rc
  setup $4 $5
  c_$CASE
  final
  [ "$HUNG" = 1 ] || wait
  teardown
}

TBL_NONE=$(table_of none)
gen 100 $OB > /tmp/orig.img
gen 9001 $C > /tmp/d.A; gen 9002 $C > /tmp/d.B; gen 9003 $C > /tmp/d.S
gen 9004 $C > /tmp/d.O; gen 9005 512 > /tmp/d.P; gen 9006 2048 > /tmp/d.H
gen 9007 $C > /tmp/d.D
for i in 0 1 2 3; do $DD if=/tmp/orig.img of=/tmp/o.$i bs=$C skip=$i count=1 2>/dev/null; done
cp /tmp/o.0 /tmp/o.0P; patch_file /tmp/o.0P 1024 /tmp/d.P
cp /tmp/o.0 /tmp/o.0mix; head -c 2048 /tmp/d.O > /tmp/d.O2; patch_file /tmp/o.0mix 2048 /tmp/d.O2

sel=$(sed -n 's/.*race\.cases=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
cases=$(grep -v '^#' /tmp/race.cases | awk '{ print $1 }')
[ -z "$sel" ] || cases=$sel

mods=$(modules_with_target snapshot)
has_both "$mods" || info "only '$mods' provide the snapshot target: no differential compare"
for M in $mods; do
  load_module "$M"
  grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
  for c in $cases; do
    line=$(grep "^$c " /tmp/race.cases) || fail "no case $c"
    set -- $line
    info "$M: $1 ($2 $3 ms, COW $4 sectors, $5)"
    s=$(now_ms)
    ( run_case $1 $2 $3 $4 $5 ) &
    if wait $!; then :; else echo "FAIL: $M $c: stopped (rc $?)" >> /tmp/$M.$c.fails; teardown; fi
    echo "  [$M $c] measured: $(tr '\n' ';' < /tmp/$M.$c.meas 2>/dev/null) case took $(( $(now_ms) - s ))ms"
  done
  rmmod dm_delay || true
  unload_modules
done

nfail=0
echo "== verdicts"
for c in $cases; do
  v=
  for M in $mods; do
    if [ -s /tmp/$M.$c.fails ]; then v="$v $M=FAIL"; else v="$v $M=pass"; fi
  done
  if has_both "$mods"; then
    if cmp -s /tmp/upstream.$c.rec /tmp/rs.$c.rec; then v="$v records=same"
    else
      v="$v records=DIFFER"
      diff /tmp/upstream.$c.rec /tmp/rs.$c.rec | sed 's/^/    /' || true
    fi
  fi
  case "$v" in *FAIL*|*DIFFER*) nfail=$((nfail + 1)); v="FAIL$v" ;; *) v="ok  $v" ;; esac
  echo "CASE $c: $v"
done
for M in $mods; do cat /tmp/$M.*.fails 2>/dev/null; done
[ $nfail = 0 ] || fail "$nfail race case(s) failed"

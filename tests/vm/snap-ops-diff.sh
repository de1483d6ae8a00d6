# SPDX-License-Identifier: GPL-2.0
# Differential operation fuzzer: one seeded random sequence of what
# dmsetup and LVM do to snapshots (create, reload, a cancelled reload, a
# second load of a never resumed table, remove, origin refresh, origin and
# snapshot writes, reads, status and table lines, LVM's merge sequence) runs
# on upstream's module and on this one from the same disks; the two
# transcripts must be identical: every refusal and its kernel message,
# every status and table line, the checksum of every device read. Every
# read is also checked against a model (/tmp/mo: the origin; /tmp/ms.S: a
# snapshot, the origin when it was created plus its own writes; a merge
# makes the origin its snapshot's model), so a difference names the module
# that is wrong: where only upstream's reads differ from the model, the
# run reports upstream's bug and passes (found so: without the origin
# suspended around a snapshot's creation, upstream's origin writes are not
# split at the new chunk size and a later merge loses another snapshot's
# data, seed 1 with dmsnap.ops=60).
#
# Snapshots are made as lvcreate makes them: a free COW's header zeroed,
# the origin suspended around the snapshot's creation (upstream computes
# the origin's write split size only when the origin resumes).
#
# Devices: real (8 MiB of vda), origin (snapshot-origin of real), COWs c1
# (4 MiB) and c2 (256 KiB, fills up: invalid or overflowed snapshots), and
# snapshots s1..s3, each on either COW with P, PO or N and 4 or 8 KiB
# chunks. An operation whose device is missing, has no live table or is
# suspended records "skip" (the same on both if the modules agree); a
# reload is always completed or cleared, so no table is left waiting for a
# store (upstream's own corner there can oops).
#
#   dmsnap.seed=N[,N...]  the generator's seeds, one run each (default: one
#                         random seed, printed)
#   dmsnap.ops=N          operations per run (default 50)
. /tests/lib.sh

carg() { sed -n "s/.*dmsnap\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
SEEDS=$(carg seed | tr , ' ')
[ -n "$SEEDS" ] || SEEDS=$(od -A n -N 2 -t u2 /dev/urandom | tr -d ' ')
for SEED in $SEEDS; do
  case $SEED in ''|*[!0-9]*) fail "seed must be a number: '$SEED'" ;; esac
done
NOPS=$(carg ops); NOPS=${NOPS:-50}
echo "snap-ops-diff: seeds $SEEDS, $NOPS operations each (rerun with VM_APPEND=\"dmsnap.seed=$(echo $SEEDS | tr ' ' ,) dmsnap.ops=$NOPS\")"

OS=16384                  # origin sectors (8 MiB)
C1=8192; C2=512           # COW sectors: 4 MiB, 256 KiB

# gen_ops: the operations of $SEED, one a line, drawn once and run on both
# modules.
gen_ops() {
awk -v seed="$SEED" -v n="$NOPS" -v os=$((OS * 512)) 'BEGIN {
  srand(seed)
  split("P PO N", types, " ")
  for (i = 0; i < n; i++) {
    r = rand() * 100
    s = "s" (1 + int(rand() * 3)); c = "c" (1 + int(rand() * 2))
    t = types[1 + int(rand() * 3)]; ch = (rand() < 0.5) ? 8 : 16
    if (r < 14) print "create", s, c, t, ch
    else if (r < 22) print "reload", s, t, ch
    else if (r < 25) print "cancel", s
    else if (r < 28) print "twice", s, c, t, ch
    else if (r < 34) print "remove", s
    else if (r < 37) print "refresh"
    else if (r < 60) print "wo", int(rand() * (os / 4096 - 16)) * 4096, 4096 * (1 + int(rand() * 16)), i
    else if (r < 72) print "ws", s, int(rand() * (os / 4096 - 16)) * 4096, 4096 * (1 + int(rand() * 8)), i
    else if (r < 84) print "read"
    else if (r < 92) print "status"
    else print "merge", s
  }
}' > /tmp/ops
}

# The last table or snapshot error the kernel logged (device numbers out).
dm_error() {
  dmesg | grep -E 'device-mapper: (table|snapshots|ioctl)' | grep -v 'ioctl: error adding target' |
    tail -1 | sed 's/^\[[^]]*\] //; s/ [0-9]*:[0-9]*:/ X:/'
}
# try LABEL CMD...: run CMD, record ok or its refusal.
try() {
  local label=$1; shift
  dmesg -c > /dev/null
  if "$@" > /dev/null 2>&1; then out "$label: ok"; else out "$label: refused: $(dm_error)"; fi
}
out() { echo "$*" >> /tmp/$M.ops; }
exists() { dmsetup info "$1" > /dev/null 2>&1; }
# live DEV: exists with a live table and not suspended.
live() {
  local a
  a=$(dmsetup info -c --noheadings -o attr "$1" 2>/dev/null) || return 1
  case $a in *L*) ;; *) return 1 ;; esac
  case $a in *s*) return 1 ;; esac
}
is_snapshot() { [ "$(dmsetup table "$1" 2>/dev/null | cut -d' ' -f3)" = snapshot ]; }
# The COW device name of a snapshot's live table (c1 or c2).
cow_of() {
  local d; d=$(dmsetup table "$1" | cut -d' ' -f5)
  case $d in "$(devno /dev/mapper/c1)") echo c1 ;; "$(devno /dev/mapper/c2)") echo c2 ;; *) echo "?" ;; esac
}
snap_table() { echo "0 $OS snapshot /dev/mapper/real /dev/mapper/$1 $2 $3"; }
dev_sum() {
  if $DD if="/dev/mapper/$1" of=/tmp/rd bs=1M iflag=direct 2>/dev/null; then sum_file /tmp/rd; else echo "read error"; fi
}

# cow_free C: no snapshot device's table uses COW C.
cow_free() {
  local d
  for d in s1 s2 s3; do
    exists $d && [ "$(cow_of $d)" = "$1" ] && return 1
  done
  return 0
}
# A new snapshot S: the origin's model, valid.
model_new() { cp /tmp/mo /tmp/ms.$1; echo valid > /tmp/st.$1; }
# model_sync: each snapshot's state from its status line (Invalid: reads
# fail; Overflow: writes fail), and gone snapshots forgotten.
model_sync() {
  local d st
  for d in s1 s2 s3; do
    if ! live $d || ! is_snapshot $d; then
      exists $d || rm -f /tmp/st.$d /tmp/ms.$d
      continue
    fi
    [ -f /tmp/st.$d ] || continue
    st=$(dmsetup status $d | cut -d' ' -f4-)
    case $st in
      Invalid) echo invalid > /tmp/st.$d ;;
      Overflow) [ "$(cat /tmp/st.$d)" = unknown ] || echo overflow > /tmp/st.$d ;;
    esac
  done
}
op_create() {  # S C T CH: lvcreate -s
  if exists $1; then out "create $*: skip"; return; fi
  if cow_free $2; then wipe_cow /dev/mapper/$2; fi
  live origin && dmsetup suspend origin
  try "create $*" dmsetup create $1 --table "$(snap_table $2 $3 $4)"
  dmsetup resume origin
  if live $1; then model_new $1; elif exists $1; then dmsetup remove $1 2>/dev/null || true; fi
}
op_reload() {  # S T CH: lvchange --refresh with another type/chunk
  if ! live $1 || ! is_snapshot $1; then out "reload $*: skip"; return; fi
  local c; c=$(cow_of $1)
  try "reload $1 $c $2 $3: load" dmsetup load $1 --table "$(snap_table $c $2 $3)"
  try "reload $1: suspend" dmsetup suspend $1
  try "reload $1: resume" dmsetup resume $1
  live $1 || { dmsetup clear $1 2>/dev/null; dmsetup resume $1 2>/dev/null || true; }
}
op_cancel() {  # S: a reload loaded, then cleared
  if ! live $1 || ! is_snapshot $1; then out "cancel $*: skip"; return; fi
  try "cancel $1: load" dmsetup load $1 --table "$(dmsetup table $1)"
  out "cancel $1: waiting: $(dmsetup table --inactive $1 2>&1 | tr '\n' ';') $(dmsetup status --inactive $1 2>&1 | tr '\n' ';')"
  try "cancel $1: clear" dmsetup clear $1
}
op_twice() {  # S C T CH: a new device loaded twice before its first resume
  if exists $1; then out "twice $*: skip"; return; fi
  if cow_free $2; then wipe_cow /dev/mapper/$2; fi
  dmsetup create $1 --notable
  try "twice $*: load" dmsetup load $1 --table "$(snap_table $2 $3 $4)"
  out "twice $1: inactive: $(dmsetup table --inactive $1 2>&1 | tr '\n' ';') $(dmsetup status --inactive $1 2>&1 | tr '\n' ';')"
  try "twice $*: load again" dmsetup load $1 --table "$(snap_table $2 $3 $4)"
  live origin && dmsetup suspend origin
  try "twice $*: resume" dmsetup resume $1
  dmsetup resume origin
  if live $1; then model_new $1; else dmsetup clear $1 2>/dev/null; dmsetup remove $1 2>/dev/null || true; fi
}
op_remove() {
  if ! exists $1; then out "remove $*: skip"; return; fi
  try "remove $1" dmsetup remove $1
}
op_refresh() {
  try "refresh origin: load" dmsetup load origin --table "0 $OS snapshot-origin /dev/mapper/real"
  try "refresh origin: suspend" dmsetup suspend origin
  try "refresh origin: resume" dmsetup resume origin
}
op_wo() {  # OFF LEN I
  if ! live origin; then out "wo $*: skip"; return; fi
  gen "wo$3.$SEED" $2 > /tmp/w
  if write_fails /dev/mapper/origin $1 /tmp/w; then
    out "wo $*: error"; echo unknown > /tmp/st.origin
  else
    out "wo $*: ok"; patch_file /tmp/mo $1 /tmp/w
  fi
}
op_ws() {  # S OFF LEN I
  if ! live $1 || ! is_snapshot $1; then out "ws $*: skip"; return; fi
  model_sync
  gen "ws$4.$SEED" $3 > /tmp/w
  if write_fails /dev/mapper/$1 $2 /tmp/w; then
    out "ws $*: error"
    # Overflowed or invalid: nothing should land; otherwise unknown.
    case $(cat /tmp/st.$1 2>/dev/null) in overflow|invalid) ;; *) echo unknown > /tmp/st.$1 ;; esac
  else
    out "ws $*: ok"; [ ! -f /tmp/ms.$1 ] || patch_file /tmp/ms.$1 $2 /tmp/w
  fi
}
# check D SUM: the read against the model ("= model", "!= model", or why
# there is none); a mismatch is also noted in /tmp/$M.bad.
check() {
  local want st
  if [ "$1" = origin ]; then st=$(cat /tmp/st.origin); want=/tmp/mo; else st=$(cat /tmp/st.$1 2>/dev/null || echo none); want=/tmp/ms.$1; fi
  case $st in
    valid|overflow)
      if [ "$2" = "$(sum_file $want)" ]; then echo "= model"
      else echo "!= model"; echo "$M: op $n: $1 reads $2, the model $(sum_file $want)" >> /tmp/$M.bad; fi ;;
    invalid)
      if [ "$2" = "read error" ]; then echo "= model (invalid)"
      else echo "!= model (invalid, read)"; echo "$M: op $n: $1 is invalid but reads" >> /tmp/$M.bad; fi ;;
    *) echo "(no model: $st)" ;;
  esac
}
op_read() {
  local d sum
  model_sync
  for d in origin s1 s2 s3; do
    if live $d; then sum=$(dev_sum $d); out "read $d: $sum $(check $d "$sum")"; fi
  done
}
op_status() {
  local d
  for d in origin s1 s2 s3; do
    if exists $d; then out "status $d: $(dmsetup status $d 2>&1 | tr '\n' ';') table $(dmsetup table $d 2>&1 | tr '\n' ';')"; fi
  done
}
# LVM's merge: origin -> snapshot-merge on the snapshot's COW, the
# snapshot -> error; then, merged (or failed), origin -> snapshot-origin
# and the snapshot removed.
op_merge() {  # S
  local s=$1 c t ch st i=0
  if ! live $s || ! is_snapshot $s || ! live origin; then out "merge $s: skip"; return; fi
  c=$(cow_of $s); t=$(dmsetup table $s | cut -d' ' -f6); ch=$(dmsetup table $s | cut -d' ' -f7)
  dmsetup suspend origin; dmsetup suspend $s
  try "merge $s $c $t $ch: load" dmsetup load origin --table "0 $OS snapshot-merge /dev/mapper/real /dev/mapper/$c $t $ch"
  case $(dmsetup info -c --noheadings -o attr origin) in
    *I*) ;;
    *) dmsetup resume origin; dmsetup resume $s; return ;;
  esac
  dmsetup load $s --table "0 $OS error"
  try "merge $s: resume origin" dmsetup resume origin
  dmsetup resume $s
  while :; do
    st=$(dmsetup status origin)
    set -- $st
    [ "$3" = snapshot-merge ] || break
    case $4 in */*) [ "${4%%/*}" = "$5" ] && break ;; *) break ;; esac
    i=$((i + 1)); [ $i -lt 1200 ] || { out "merge $s: not done after 120 s: $st"; break; }
    sleep 0.1
  done
  out "merge $s: $(dmsetup status origin)"
  # The origin is now what the snapshot was.
  model_sync
  case $(cat /tmp/st.$s 2>/dev/null) in
    valid|overflow) cp /tmp/ms.$s /tmp/mo ;;
    *) echo unknown > /tmp/st.origin ;;
  esac
  case $st in *"Merge failed"*|*Invalid*) echo unknown > /tmp/st.origin ;; esac
  dmsetup suspend origin
  dmsetup load origin --table "0 $OS snapshot-origin /dev/mapper/real"
  dmsetup resume origin
  try "merge $s: remove the snapshot" dmsetup remove $s
}

run() {  # MODULE
  M=$1
  : > /tmp/$M.ops
  load_module $M
  $DD if=/dev/zero of=/dev/vdc bs=512 count=$((C1 + C2)) oflag=direct 2>/dev/null
  dmsetup create real --table "0 $OS linear /dev/vda 0"
  fill_mib /dev/mapper/real "opsbase.$SEED" $((OS / 2048))
  dmsetup create c1 --table "0 $C1 linear /dev/vdc 0"
  dmsetup create c2 --table "0 $C2 linear /dev/vdc $C1"
  dmsetup create origin --table "0 $OS snapshot-origin /dev/mapper/real"
  read_at /dev/mapper/real 0 $((OS * 512)) > /tmp/mo
  echo valid > /tmp/st.origin
  rm -f /tmp/st.s? /tmp/ms.s? /tmp/$M.bad
  local op
  n=0
  while read -r op args <&3; do
    n=$((n + 1))
    out "#$n $op $args"
    op_$op $args
  done 3< /tmp/ops
  op_status; op_read
  for d in s1 s2 s3 origin c1 c2 real; do
    if exists $d; then dmsetup remove $d || fail "$M: remove $d at the end"; fi
  done
  unload_modules
}

for SEED in $SEEDS; do
  echo "=== seed $SEED"
  gen_ops
  run upstream
  run rs
  for m in upstream rs; do
    [ ! -s /tmp/$m.bad ] || { echo "--- $m reads that differ from the model:"; cat /tmp/$m.bad; }
  done
  [ ! -s /tmp/rs.bad ] || fail "snap-ops-diff: seed $SEED: this module read data that differs from the model"
  echo "snap-ops-diff: $(grep -c '^#' /tmp/rs.ops) operations; refusals: $(grep -c refused /tmp/rs.ops); skips: $(grep -c ': skip' /tmp/rs.ops); reads: $(grep -c '^read ' /tmp/rs.ops), $(grep -c '= model' /tmp/rs.ops) checked against the model; status lines with Invalid: $(grep -c 'snapshot Invalid' /tmp/rs.ops), Overflow: $(grep -c 'snapshot Overflow' /tmp/rs.ops); merges done: $(grep -c '^merge s[0-9]: 0 ' /tmp/rs.ops)"
  first=$(cmp /tmp/upstream.ops /tmp/rs.ops | sed -n 's/.* line \([0-9]*\).*/\1/p')
  if [ -z "$first" ]; then
    echo "snap-ops-diff: seed $SEED: transcripts identical"
  elif [ -s /tmp/upstream.bad ]; then
    # Upstream read data that is not the model while every read of this
    # module matched it: upstream's bug (reported above); what the
    # transcripts show after it is not comparable.
    echo "snap-ops-diff: seed $SEED: upstream read wrong data (above), this module matched the model; transcripts differ from line $first"
  else
    echo "--- upstream's transcript up to the first difference:"
    head -n "$first" /tmp/upstream.ops
    diff /tmp/upstream.ops /tmp/rs.ops | head -40
    fail "snap-ops-diff: seed $SEED: the transcripts differ (upstream <, rs >)"
  fi
  grep -E 'refused|^merge .*: 0' /tmp/rs.ops | sort | uniq -c | head -20
done

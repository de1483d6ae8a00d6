# SPDX-License-Identifier: GPL-2.0
# dmsnap merge: the offline merge of a snapshot COW into its origin, checked
# against the kernel's in-kernel merge (snapshot-merge) and against a model,
# the snapshot image read before the merge (its checksum, and a file built
# from the generated data that must agree with it).
#
# Golden pairs (origin 16 MiB, COW 8 MiB), made once per geometry and never
# written again; every case works on copies of them:
#   c8  4 KiB chunks (256 exceptions per area), made with this module
#   c1  512-byte chunks (32 exceptions per area), made with upstream's
# Each: origin filled with a pattern, persistent snapshot, snapshot-origin,
# writes to the origin (and every 8th to the snapshot) at scattered sector
# offsets and lengths from a seeded generator, so the exception list spans
# several metadata areas; then every dm device is removed (COW offline).
#
#  1 offline == in-kernel: the same pair merged by snapshot-merge (this
#    module, and upstream's) and by `dmsnap merge`: every origin = model,
#    `dmsnap check` clean, `dmsnap usage` 0 exceptions.
#  2 SIGKILL: `dmsnap merge --max-run-chunks 1` killed after a seeded
#    random delay, 0..2x a timed full run (denser early); the COW must be
#    clean; then resumed by `dmsnap merge` (even cuts) or by snapshot-merge
#    (odd cuts: this module / upstream's in turn); origin = model. Prints
#    "dmsnap-merge: cuts=N ok=K partial=P" (partial: the kill left fewer
#    exceptions than at the start, but some); fails unless ok=N and P>0.
#  3 the other way: snapshot-merge with the origin's writes slowed by
#    dm-delay (400 ms), stopped part-way (suspend + remove): the suspended
#    status dropped but not to done, the COW is clean with fewer
#    exceptions; finished by `dmsnap merge`; on both modules.
#  4 refusals that write nothing: an origin smaller than the exceptions
#    (exit 1, names the origin), a COW or an origin held by a dm table
#    (exit 4, "in use"), an invalidated snapshot (exit 2).
#  5 64 KiB chunks on an origin that ends inside its last chunk: dmsnap,
#    this module and upstream's merge it to the model.
#
# Kernel command line (VM_APPEND) or environment:
#   dmsnap.seed=N / DMSNAP_SEED   generator seed (default: random, printed)
#   dmsnap.cuts=N / DMSNAP_CUTS   number of kills (default 8)
#   dmsnap.mergebreak=model|noresume   break the scenario on purpose: check
#       against the pre-merge origin instead of the snapshot, or skip the
#       resume after each kill. Either must make the scenario FAIL.
. /tests/lib.sh

OMIB=16; OSEC=$((OMIB * 2048))
CMIB=8; CSEC=$((CMIB * 2048))
SLOT=65536               # every region starts at a multiple of 32 MiB
DELAY_MS=400             # part 3: dm-delay on the origin's writes
# Regions: golden origins on vda, golden COWs on vdc (slot 0 c8, 1 c1, 2
# the invalidated snapshot of part 4, 3 part 5's pair); work copies on vdb
# (origins) and vdd (COWs), slots 0..7.

carg() { sed -n "s/.*dmsnap\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
SEED=$(carg seed); SEED=${SEED:-${DMSNAP_SEED:-}}
[ -n "$SEED" ] || SEED=$(od -A n -N 2 -t u2 /dev/urandom | tr -d ' ')
case $SEED in ''|*[!0-9]*) fail "seed must be a number: '$SEED'" ;; esac
NCUTS=$(carg cuts); NCUTS=${NCUTS:-${DMSNAP_CUTS:-8}}
BREAK=$(carg mergebreak); BREAK=${BREAK:-${DMSNAP_MERGEBREAK:-}}
echo "dmsnap-merge: seed=$SEED cuts=$NCUTS${BREAK:+ break=$BREAK} (rerun with VM_APPEND=dmsnap.seed=$SEED)"

now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
T_START=$(now_ms)

# geo G: the geometry's parameters.
geo() {
  case $1 in
    c8) CH=8 GS=0 GM=rs NW=40 LENS="1 8 16 64 128 256 512" GI=1 ;;
    c1) CH=1 GS=1 GM=upstream NW=24 LENS="1 2 8 16 64 128" GI=2 ;;
    *) fail "geometry $1" ;;
  esac
}

lin() { dmsetup create "$1" --table "0 $4 linear $2 $(($3 * SLOT))"; }   # NAME DEV SLOT SECTORS
# copy SRC SLOT DST SLOT MIB: raw region copy.
copy() {
  $DD if="$1" of="$3" bs=1M skip=$(($2 * 32)) seek=$(($4 * 32)) count="$5" iflag=direct oflag=direct conv=notrunc 2>/dev/null \
    || fail "copy $1 slot $2 to $3 slot $4"
}
restore() { geo "$1"; copy /dev/vda $GS /dev/vdb "$2" $OMIB; copy /dev/vdc $GS /dev/vdd "$2" $CMIB; }  # G SLOT
pair_up() { lin "$1-o" /dev/vdb "$2" $OSEC; lin "$1-c" /dev/vdd "$2" $CSEC; }
pair_down() { dmsetup remove "$1-o"; dmsetup remove "$1-c"; }

# usage_field DEV FIELD: a number (or the status string) from dmsnap usage --json.
usage_field() {
  local out
  out=$(dmsnap usage --json "$1") || fail "dmsnap usage $1 exited $?"
  echo "$out" | sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}
excount() { usage_field "$1" exceptions; }

# cow_done LABEL NAME: NAME-c is clean against NAME-o and has no exception.
cow_done() {
  local rc=0
  dmsnap check -q --origin "/dev/mapper/$2-o" "/dev/mapper/$2-c" || rc=$?
  expect_eq "$1: dmsnap check exit status" $rc 0
  expect_eq "$1: exceptions left (dmsnap usage)" "$(excount "/dev/mapper/$2-c")" 0
}

# kmerge NAME CHUNK [SECTORS]: snapshot-merge over NAME-o/NAME-c until
# merged, removed.
kmerge() {
  dmsetup create "$1" --table "0 ${3:-$OSEC} snapshot-merge /dev/mapper/$1-o /dev/mapper/$1-c P $2"
  wait_merged "$1" 240
  dmsetup remove "$1"
}

# kmerge_check LABEL NAME CHUNK SECTORS MODEL: kmerge NAME (SECTORS may be
# empty); its origin must then read as MODEL (kept in $ksum) and its COW
# be clean and empty.
kmerge_check() {
  kmerge "$2" "$3" "$4"
  ksum=$(sum_dev "/dev/mapper/$2-o")
  expect_eq "$1: origin = model" "$ksum" "$5"
  cow_done "$1" "$2"
}

origin_is_model() {  # LABEL NAME G
  expect_eq "$1: origin = model" "$(sum_dev "/dev/mapper/$2-o")" "$(cat /tmp/$3.model)"
}

# gen_writes G: "target offset_bytes length_bytes index" lines.
gen_writes() {
  geo "$1"
  awk -v seed=$((SEED * 31 + GI)) -v n=$NW -v lens="$LENS" -v osec=$OSEC 'BEGIN {
    srand(seed); k = split(lens, L, " ");
    for (i = 0; i < n; i++) {
      l = L[1 + int(rand() * k)]; off = int(rand() * (osec - l));
      print (i % 8 == 3 ? "snap" : "origin"), off * 512, l * 512, i;
    }
  }'
}

# make_golden G: the golden pair, its model (/tmp/G.model: checksum of the
# snapshot image), exception count (/tmp/G.e0) and status (/tmp/G.status).
make_golden() {
  local g=$1 t off len i w snapsum rc a
  geo $g
  load_module $GM
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$((GS * SLOT / 8)) oflag=direct conv=notrunc 2>/dev/null || fail "wipe COW"
  lin g-o /dev/vda $GS $OSEC
  lin g-c /dev/vdc $GS $CSEC
  fill_mib /dev/mapper/g-o "fill$g" $OMIB
  : > /tmp/$g.snap; i=0
  while [ $i -lt $OMIB ]; do cat /tmp/fill.fill$g >> /tmp/$g.snap; i=$((i + 1)); done
  cp /tmp/$g.snap /tmp/$g.orig
  dmsetup create g-s --table "0 $OSEC snapshot /dev/mapper/g-o /dev/mapper/g-c P $CH"
  dmsetup create g --table "0 $OSEC snapshot-origin /dev/mapper/g-o"
  gen_writes $g > /tmp/$g.writes
  w=0
  while read -r t off len i; do
    gen "$SEED.$g.$i" "$len" > /tmp/w
    if [ "$t" = snap ]; then
      write_at /dev/mapper/g-s "$off" /tmp/w; patch_file /tmp/$g.snap "$off" /tmp/w
    else
      write_at /dev/mapper/g "$off" /tmp/w; patch_file /tmp/$g.orig "$off" /tmp/w
    fi
    w=$((w + len))
  done < /tmp/$g.writes
  snapsum=$(sum_dev /dev/mapper/g-s)
  expect_eq "$g golden: snapshot = generated model" "$snapsum" "$(sum_file /tmp/$g.snap)"
  expect_eq "$g golden: origin = generated data" "$(sum_dev /dev/mapper/g)" "$(sum_file /tmp/$g.orig)"
  [ "$snapsum" != "$(sum_file /tmp/$g.orig)" ] || fail "$g golden: the writes changed nothing"
  info "$g golden ($GM, chunk $CH): $NW writes ($((w / 1024)) KiB), snapshot status $(dmsetup status g-s | cut -d' ' -f4-)"
  dmsetup remove g; dmsetup remove g-s
  echo "$snapsum" > /tmp/$g.model
  # dmsnap.mergebreak=model: check everything against the pre-merge origin.
  [ "$BREAK" != model ] || sum_file /tmp/$g.orig > /tmp/$g.model
  excount /dev/mapper/g-c > /tmp/$g.e0
  usage_field /dev/mapper/g-c status > /tmp/$g.status
  rc=0; dmsnap check -q --origin /dev/mapper/g-o /dev/mapper/g-c || rc=$?
  expect_eq "$g golden: dmsnap check exit status" $rc 0
  a=$(usage_field /dev/mapper/g-c areas)
  info "$g golden: $(cat /tmp/$g.e0) exceptions in $a areas of $((CH * 32)), offline status '$(cat /tmp/$g.status)'"
  [ "$a" -ge 2 ] || fail "$g golden: the exceptions fit in one metadata area (want several)"
  dmsetup remove g-o; dmsetup remove g-c
  rm -f /tmp/$g.snap /tmp/$g.orig
  unload_modules
}

# ---- part 1: offline == in-kernel ----
part1() {
  local g=$1 s0 s1 s2 t
  geo $g
  restore $g 0; restore $g 1; restore $g 2
  load_module rs
  pair_up k0 0
  t=$(now_ms); kmerge_check "$g: snapshot-merge (rs)" k0 $CH "" "$(cat /tmp/$g.model)"; t=$(( $(now_ms) - t ))
  s0=$ksum
  info "$g: snapshot-merge (rs) merged $(cat /tmp/$g.e0) chunks in $t ms"
  pair_down k0
  pair_up d1 1
  t=$(now_ms)
  dmsnap merge --origin /dev/mapper/d1-o /dev/mapper/d1-c || fail "$g: dmsnap merge exited $?"
  t=$(( $(now_ms) - t ))
  s1=$(sum_dev /dev/mapper/d1-o)
  expect_eq "$g: dmsnap merge: origin = model" "$s1" "$(cat /tmp/$g.model)"
  cow_done "$g: dmsnap merge" d1
  info "$g: dmsnap merge took $t ms; COW after it: $(usage_field /dev/mapper/d1-c status)"
  pair_down d1
  load_module upstream
  pair_up k2 2
  kmerge_check "$g: snapshot-merge (upstream)" k2 $CH "" "$(cat /tmp/$g.model)"
  s2=$ksum
  pair_down k2
  unload_modules
  expect_eq "$g: dmsnap merge = snapshot-merge (rs)" "$s1" "$s0"
  expect_eq "$g: dmsnap merge = snapshot-merge (upstream)" "$s1" "$s2"
  echo "dmsnap-merge: $g offline == in-kernel: rs, upstream and dmsnap origins $s1 (model), COWs clean and empty"
}

# ---- part 2: SIGKILL at random points ----
# calibrate G: a timed full `dmsnap merge --max-run-chunks 1` (/tmp/G.T, ms).
calibrate() {
  local g=$1 t
  geo $g
  restore $g 3
  pair_up cal 3
  t=$(now_ms)
  dmsnap merge --max-run-chunks 1 -q --origin /dev/mapper/cal-o /dev/mapper/cal-c || fail "$g: dmsnap merge --max-run-chunks 1 exited $?"
  t=$(( $(now_ms) - t ))
  origin_is_model "$g: dmsnap merge --max-run-chunks 1" cal $g
  cow_done "$g: dmsnap merge --max-run-chunks 1" cal
  pair_down cal
  echo $t > /tmp/$g.T
  info "$g: calibration: $(cat /tmp/$g.e0) one-chunk commits in $t ms"
}

# one_cut I FRACTION: one kill. Geometry c8 for cuts 0,1,4,5,..., c1 for 2,3,...;
# resume: dmsnap (even), snapshot-merge rs (I%4==1), upstream (I%4==3).
one_cut() {
  local i=$1 g res us pid rc crc e e0 state
  if [ $(( (i / 2) % 2 )) = 0 ]; then g=c8; else g=c1; fi
  case $((i % 4)) in 0|2) res=dmsnap ;; 1) res=rs ;; 3) res=upstream ;; esac
  geo $g
  e0=$(cat /tmp/$g.e0)
  us=$(awk -v f="$2" -v t="$(cat /tmp/$g.T)" 'BEGIN { printf "%d", f * t * 1000 }')
  restore $g 3
  pair_up x 3
  dmsnap merge --max-run-chunks 1 -q --origin /dev/mapper/x-o /dev/mapper/x-c &
  pid=$!
  usleep "$us"
  kill -9 $pid 2>/dev/null || true
  # (braces: no "Killed" from the shell in the log)
  { rc=0; wait $pid || rc=$?; } 2>/dev/null
  case $rc in 0|137) ;; *) fail "cut $i: dmsnap merge exited $rc" ;; esac
  crc=0; dmsnap check -q --origin /dev/mapper/x-o /dev/mapper/x-c || crc=$?
  if [ $crc != 0 ]; then dmsnap check --origin /dev/mapper/x-o /dev/mapper/x-c | tail -5 || true; fi
  expect_eq "cut $i ($g, killed after $((us / 1000)) ms): dmsnap check exit status" $crc 0
  e=$(excount /dev/mapper/x-c)
  if [ "$e" = "$e0" ]; then state=before; elif [ "$e" = 0 ]; then state=after; else state=partial; fi
  [ $rc != 0 ] || [ "$e" = 0 ] || fail "cut $i: dmsnap merge exited 0 with $e exceptions left"
  [ "$e" -le "$e0" ] || fail "cut $i: $e exceptions, more than the $e0 at the start"
  echo $state > /tmp/cut.state
  if [ "$BREAK" = noresume ]; then
    :
  elif [ $res = dmsnap ]; then
    dmsnap merge -q --origin /dev/mapper/x-o /dev/mapper/x-c || fail "cut $i: dmsnap merge (resume) exited $?"
  else
    load_module $res
    kmerge x $CH
    unload_modules
  fi
  origin_is_model "cut $i ($g, killed after $((us / 1000)) ms, $e of $e0 left, resumed by $res)" x $g
  cow_done "cut $i" x
  pair_down x
  echo "cut $i: $g kill after $((us / 1000)) ms (rc $rc): $e of $e0 exceptions left ($state); resumed by $res: origin = model"
}

part2() {
  local i=0 ok=0 partial=0 before=0 after=0 rc f st
  awk -v seed=$((SEED * 31 + 7)) -v n=$NCUTS 'BEGIN {
    srand(seed);
    for (i = 0; i < n; i++) p[i] = i;
    for (i = n - 1; i > 0; i--) { j = int(rand() * (i + 1)); t = p[i]; p[i] = p[j]; p[j] = t }
    # u spread evenly over [0, 1); the kill at 2 u^2 times the full run:
    # dense early (the first commits, or before any), some after the end.
    for (i = 0; i < n; i++) { u = (p[i] + rand()) / n; printf "%.4f\n", 2 * u * u }
  }' > /tmp/cut.fracs
  while read -r f; do
    rm -f /tmp/cut.state
    set +e
    ( set -e; one_cut $i "$f" ) < /dev/null
    rc=$?
    set -e
    if [ $rc = 0 ]; then ok=$((ok + 1)); else echo "cut $i: FAILED"; fi
    st=$(cat /tmp/cut.state 2>/dev/null || true)
    case $st in partial) partial=$((partial + 1)) ;; before) before=$((before + 1)) ;; after) after=$((after + 1)) ;; esac
    for d in x x-o x-c; do dmsetup remove $d 2>/dev/null || true; done
    unload_modules
    i=$((i + 1))
  done < /tmp/cut.fracs
  info "kills before the first commit: $before, mid-merge: $partial, after the end: $after"
  echo "dmsnap-merge: cuts=$NCUTS ok=$ok partial=$partial"
  [ $ok = "$NCUTS" ] || fail "$((NCUTS - ok)) of $NCUTS cuts failed"
  [ $partial -gt 0 ] || fail "no kill landed mid-merge: the cuts tested nothing"
}

# ---- part 3: an in-kernel merge stopped part-way, finished by dmsnap ----
part3() {
  local m=$1 g=c8 used0 st st2 used meta n e e0 t
  geo $g
  e0=$(cat /tmp/$g.e0)
  used0=$(cut -d/ -f1 /tmp/$g.status)
  restore $g 4
  load_module $m
  grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
  pair_up v 4
  dmsetup create v-od --table "0 $OSEC delay /dev/mapper/v-o 0 0 /dev/mapper/v-o 0 $DELAY_MS /dev/mapper/v-o 0 0"
  dmsetup create v --table "0 $OSEC snapshot-merge /dev/mapper/v-od /dev/mapper/v-c P $CH"
  # When to stop. upstream's: once its status has dropped (it merges one
  # run at a time). This module's: once dm-delay holds one of its origin
  # writes (field 5 of dm-delay's status), i.e. while the first batch is
  # copied: it pipelines its batches, so by the time its status first
  # drops the next batch (here all the rest) is copied already and the
  # stop would commit it. Either way the suspended status must have
  # dropped, and not to done.
  n=0; t=$(now_ms)
  while :; do
    st=$(dmsetup status v)
    set -- $st
    [ "${4%%/*}" != "$5" ] || fail "$m: the merge finished before it could be stopped: '$st'"
    if [ $m = upstream ]; then
      [ "${4%%/*}" -ge "$used0" ] || break
    else
      [ "$(dmsetup status v-od | awk '{ print $5 }')" -lt 1 ] || break
    fi
    n=$((n + 1)); [ $n -lt 1200 ] || fail "$m: no merge progress in 60 s: $st"
    sleep 0.05
  done
  st=$(dmsetup status v)
  dmsetup suspend v
  st2=$(dmsetup status v)
  info "$m: merge stopped $(( $(now_ms) - t )) ms after its start: status '$(echo $st | cut -d' ' -f4-)', suspended '$(echo $st2 | cut -d' ' -f4-)'"
  set -- $st2
  used=${4%%/*}; meta=$5
  [ "$used" -lt "$used0" ] || fail "$m: no progress before the stop: '$st2', $used0 used at the start"
  [ "$used" != "$meta" ] || fail "$m: the merge finished although it was stopped: '$st2'"
  dmsetup remove v
  dmsetup remove v-od
  rc=0; dmsnap check -q --origin /dev/mapper/v-o /dev/mapper/v-c || rc=$?
  expect_eq "$m: stopped merge: dmsnap check exit status" $rc 0
  e=$(excount /dev/mapper/v-c)
  [ "$e" -gt 0 ] && [ "$e" -lt "$e0" ] || fail "$m: the stopped merge left $e of $e0 exceptions (want part-way)"
  [ "$(sum_dev /dev/mapper/v-o)" != "$(cat /tmp/$g.model)" ] || fail "$m: the origin reads as the model before dmsnap merge ran"
  dmsnap merge -q --origin /dev/mapper/v-o /dev/mapper/v-c || fail "$m: dmsnap merge after the stopped merge exited $?"
  origin_is_model "$m: merge stopped with $e of $e0 left, finished by dmsnap" v $g
  cow_done "$m: finished by dmsnap" v
  pair_down v
  unload_modules
  echo "dmsnap-merge: $m snapshot-merge stopped with $e of $e0 exceptions left, dmsnap merge finished it: origin = model"
}

# ---- part 4: refusals, nothing written ----
# refused LABEL WANT_RC WANT_MSG ORIGIN COW: dmsnap merge exits WANT_RC,
# says WANT_MSG, and neither device changes.
refused() {
  local so sc rc=0
  so=$(sum_dev "$4"); sc=$(sum_dev "$5")
  dmsnap merge --origin "$4" "$5" > /tmp/refused.out 2>&1 || rc=$?
  cat /tmp/refused.out
  expect_eq "$1: exit status" $rc "$2"
  grep -qi "$3" /tmp/refused.out || fail "$1: no '$3' in the message"
  expect_eq "$1: origin unchanged" "$(sum_dev "$4")" "$so"
  expect_eq "$1: COW unchanged" "$(sum_dev "$5")" "$sc"
  info "$1: refused with exit $rc, nothing written"
}

part4() {
  local rc sc
  geo c8
  load_module rs
  restore c8 5
  # An origin too small for the exceptions.
  dmsetup create small --table "0 2048 linear /dev/vdb $((5 * SLOT))"
  lin b-c /dev/vdd 5 $CSEC
  refused "origin of 1 MiB" 1 origin /dev/mapper/small /dev/mapper/b-c
  dmsetup remove small; dmsetup remove b-c
  # The COW held by a snapshot table (of another origin, so the origin given
  # to dmsnap is free), then the origin held by a snapshot-origin table.
  pair_up b 5
  sc=$(sum_dev /dev/mapper/b-c)
  lin other /dev/vdb 4 $OSEC
  dmsetup create hold --table "0 $OSEC snapshot /dev/mapper/other /dev/mapper/b-c P 8"
  refused "COW held by a snapshot" 4 "in use" /dev/mapper/b-o /dev/mapper/b-c
  dmsetup remove hold; dmsetup remove other
  expect_eq "COW after the snapshot holding it is gone" "$(sum_dev /dev/mapper/b-c)" "$sc"
  dmsetup create hold --table "0 $OSEC snapshot-origin /dev/mapper/b-o"
  refused "origin held by a snapshot-origin" 4 "in use" /dev/mapper/b-o /dev/mapper/b-c
  dmsetup remove hold
  # Still the golden pair: it merges now.
  dmsnap merge -q --origin /dev/mapper/b-o /dev/mapper/b-c || fail "dmsnap merge after the refusals exited $?"
  origin_is_model "merge after the refusals" b c8
  pair_down b
  # An invalidated snapshot: a 64 KiB COW (14 data chunks) overflowed by a
  # 128 KiB origin write.
  dmsetup create t-o --table "0 8192 linear /dev/vda $((2 * SLOT))"
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$((2 * SLOT / 8)) oflag=direct conv=notrunc 2>/dev/null || fail "wipe tiny COW"
  dmsetup create t-c --table "0 128 linear /dev/vdc $((2 * SLOT))"
  fill_mib /dev/mapper/t-o tiny 4
  dmsetup create t-s --table "0 8192 snapshot /dev/mapper/t-o /dev/mapper/t-c P 8"
  dmsetup create t --table "0 8192 snapshot-origin /dev/mapper/t-o"
  gen tinyw 131072 > /tmp/w
  write_at /dev/mapper/t 65536 /tmp/w
  expect_eq "tiny snapshot status" "$(dmsetup status t-s | cut -d' ' -f4-)" Invalid
  dmsetup remove t; dmsetup remove t-s
  rc=0; dmsnap check -q /dev/mapper/t-c || rc=$?
  expect_eq "invalidated COW: dmsnap check exit status" $rc 2
  refused "invalidated snapshot" 2 invalid /dev/mapper/t-o /dev/mapper/t-c
  dmsetup remove t-o; dmsetup remove t-c
  unload_modules
  echo "dmsnap-merge: refusals: small origin exit 1, COW or origin in use exit 4, invalid snapshot exit 2; nothing written"
}

# ---- part 5: 64 KiB chunks, an origin ending inside its last chunk ----
# Origin 4 MiB - 4 KiB (the last chunk is 60 KiB long), COW 1 MiB, chunk
# 128 (one area): the copies of the last chunk are clipped to the origin's
# end. Exceptions in it from an origin write and a snapshot write. Merged
# by dmsnap, by this module and by upstream's: all = model.
part5() {
  local ts=8184 s0 snapsum
  load_module rs
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$((3 * SLOT / 8)) oflag=direct conv=notrunc 2>/dev/null || fail "wipe COW"
  lin e-f /dev/vda 3 8192
  fill_mib /dev/mapper/e-f tail 4
  dmsetup remove e-f
  lin e-o /dev/vda 3 $ts
  lin e-c /dev/vdc 3 2048
  dmsetup create e-s --table "0 $ts snapshot /dev/mapper/e-o /dev/mapper/e-c P 128"
  dmsetup create e --table "0 $ts snapshot-origin /dev/mapper/e-o"
  gen "$SEED.t1" 4096 > /tmp/w; write_at /dev/mapper/e $((ts * 512 - 4096)) /tmp/w
  gen "$SEED.t2" 102400 > /tmp/w; write_at /dev/mapper/e $((1048576 + 512)) /tmp/w
  gen "$SEED.t3" 2048 > /tmp/w; write_at /dev/mapper/e-s $((ts * 512 - 12288)) /tmp/w
  gen "$SEED.t4" 1024 > /tmp/w; write_at /dev/mapper/e-s 512 /tmp/w
  gen "$SEED.t5" 8192 > /tmp/w; write_at /dev/mapper/e $((ts * 512 - 8192 * 9)) /tmp/w
  snapsum=$(sum_dev /dev/mapper/e-s)
  [ "$snapsum" != "$(sum_dev /dev/mapper/e)" ] || fail "tail: origin and snapshot are the same"
  dmsetup remove e; dmsetup remove e-s; dmsetup remove e-o; dmsetup remove e-c
  [ "$BREAK" != model ] || snapsum=wrong-model
  copy /dev/vda 3 /dev/vdb 6 4; copy /dev/vdc 3 /dev/vdd 6 1
  copy /dev/vda 3 /dev/vdb 7 4; copy /dev/vdc 3 /dev/vdd 7 1
  lin t6-o /dev/vdb 6 $ts; lin t6-c /dev/vdd 6 2048
  info "tail: $(excount /dev/mapper/t6-c) exceptions of 64 KiB, the last one 60 KiB long"
  dmsnap merge -q --origin /dev/mapper/t6-o /dev/mapper/t6-c || fail "tail: dmsnap merge exited $?"
  s0=$(sum_dev /dev/mapper/t6-o)
  expect_eq "tail: dmsnap merge: origin = model" "$s0" "$snapsum"
  cow_done "tail: dmsnap merge" t6
  dmsetup remove t6-o; dmsetup remove t6-c
  lin t7-o /dev/vdb 7 $ts; lin t7-c /dev/vdd 7 2048
  kmerge_check "tail: snapshot-merge (rs)" t7 128 $ts "$snapsum"
  dmsetup remove t7-o; dmsetup remove t7-c
  load_module upstream
  lin t3-o /dev/vda 3 $ts; lin t3-c /dev/vdc 3 2048
  kmerge_check "tail: snapshot-merge (upstream)" t3 128 $ts "$snapsum"
  dmsetup remove t3-o; dmsetup remove t3-c
  unload_modules
  echo "dmsnap-merge: chunk 128, origin ending mid-chunk: dmsnap, rs and upstream origins $s0 (model)"
}

for g in c8 c1; do make_golden $g; done
info "golden pairs made in $(( ($(now_ms) - T_START) / 1000 )) s"
for g in c8 c1; do part1 $g; done
for g in c8 c1; do calibrate $g; done
part2
part3 rs
part3 upstream
part4
part5
echo "dmsnap-merge: all parts passed in $(( ($(now_ms) - T_START) / 1000 )) s"

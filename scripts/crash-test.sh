#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Kill-QEMU crash test of snapshot copy-out and snapshot-merge (issues 4, 17).
#
#   scripts/crash-test.sh [N]        the overflow cut + N aimed cuts
#                                    (default 6), against the Rust module
#
# Environment:
#   CRASH_SEED=S      base seed (default: the time; printed, reuse it to
#                     reproduce: cut i uses seed S+i for everything, its aim
#                     and kill delay included)
#   CRASH_IMPL=rs|upstream   module under test (default rs)
#   CRASH_KO=path     the module (default: ./dm-snapshot-rs.ko, built if
#                     missing; copied first, so a rebuild meanwhile is harmless)
#   CRASH_DELAY=D     phase A's delay profiles (see crash-a.sh): while the
#                     merge runs, and for the upgrade writes a copy-out cut
#                     aims at, the I/O of the origin and COW waits D ms in
#                     dm-delay (default 300; 0 = no dm-delay; at least 150,
#                     as dm-delay busy-polls for delays under 50 and the
#                     copy profile delays origin reads by D/3)
#   CRASH_KILL_MIN / CRASH_KILL_MAX   kill window in seconds after QEMU
#                     starts, for the timer cuts (default 20..45)
#   CRASH_OVF_DELAY=MS   the overflow cut's COW write delay (default 4000)
#   CRASH_BREAK=1     self-test: phase B's model forgets the last two
#                     acknowledged load writes, so cuts with acks must fail
#   CRASH_KDIR=dir    the kernel to boot (default: scripts/kernel.sh's, for
#                     KERNEL_SERIES; scripts/stock/vm-kernel.sh's for the
#                     stock kernel)
#   CRASH_OUT=dir     work directory (default out/crash); failed cuts keep
#                     their disk images there for reproduction
# Many cuts: `CRASH_SEED=1000 scripts/crash-test.sh 40` (about 45 s per cut
# on a busy 2-CPU host; the overflow cut ~30 s); several such runs with different seeds can run in parallel with
# different CRASH_OUT directories.
#
# Cut 0, in every run: the overflow cut (issue 17; tests/crash/crash-ovf-a.sh
#   and crash-ovf-b.sh). A P snapshot with a 6-chunk COW is filled by origin
#   writes; one more origin write overflows it, and QEMU is SIGKILLed as soon
#   as the guest reports that this write returned. After the reboot the
#   snapshot must load `Invalid`, never valid with the overwritten chunk
#   reading the origin's new data. The COW is under dm-delay (4 s per write)
#   for that last write, so a header that is written only after the origin
#   write returned is deterministically still queued in the guest when QEMU
#   dies; a header written before it returned is on the disk image.
#
# Cuts 1..N, each on fresh disks:
#   phase A (tests/crash/crash-a.sh) takes a snapshot, writes the origin
#     (copy-outs), merges it back with LVM's table sequence while a stamped
#     write load hits the merging device, goes back to linear, and repeats
#     in rounds; notes of what must be on disk go O_DSYNC to /dev/vdd.
#     Undelayed, the merge takes well under a second and a copy-out a few
#     ms (a timer-and-stage version of this test landed 14 of 16 cuts after
#     the merge had finished), so the origin and the COW sit on dm-delay
#     while the merge runs, and for the two upgrade writes a copy-out cut
#     aims at (CRASH_DELAY: each merge batch and each copy-out with its
#     commit is then in flight for about a second).
#     The guest prints markers (STAGE, UPG, MERGE, SLOW lines, see
#     crash-a.sh) to results.log; the host watches it and SIGKILLs QEMU a
#     seeded delay after the marker its aim waits for. Aims, by cut seed s
#     (round 2 instead of round 1 for one seed in eight):
#       s%8 = 4..7  merge:    0..10D ms after the merge's first MERGE line
#                             (its status as soon as it runs), or 0..3D ms
#                             after the second (its first progress), for
#                             half the merge cuts each; at the latest when
#                             it reports that it has finished. (With the
#                             Rust module and D = 300, the merge runs in
#                             about three batches of ~4, ~1.5 and ~0.7 s.)
#       s%8 = 1, 2  copy-out: 0..999 ms after upgrade write k (seeded 1..41)
#                             is issued; writes k and k+1 run under the
#                             copy profile (a timer cut slows a seeded pair
#                             too)
#       s%8 = 3     switch:   50..599 ms after the upgrade is written (the
#                             notes say stage 2, then the snapshot-merge
#                             table switch: ~0.1..0.5 s here)
#       s%8 = 0     timer:    CRASH_KILL_MIN..MAX s after QEMU starts
#                             (anything: setup, a later round, linear, ...)
#   phase B (tests/crash/crash-b.sh) boots on the same disks, activates as
#     LVM would (the snapshot after a cut during the upgrade, snapshot-merge
#     directly after a cut during the merge), waits for the merge, and
#     checks byte for byte: the snapshot image S outside the load region,
#     and inside it S plus the acknowledged load writes (plus possibly the
#     one write that was in flight).
# Where a cut landed is decided from evidence, not from its aim: the notes'
# stage and the status phase B reads back at activation (CRASH-EVIDENCE
# lines), and the last marker phase A printed before the kill:
#   merge batch  notes stage 2, and phase B found the merge unfinished
#                (chunks left), with progress committed or the merge table
#                live (STAGE 3 or MERGE marker of that round)
#   copy-out     notes stage 1, last marker "UPG ... issued": an origin
#                write (copy-out, commit, origin write) had not returned
#                (or dd was still starting: a few ms of a slowed write's ~1 s)
#   switch       notes stage 2, nothing merged, merge table not reported live
#   idle         between upgrade writes, before or after the upgrade, merge
#                finished (the load alone), linear
#   early        no notes yet (cut during setup)
# The run ends with that distribution, e.g. "crash-test: cuts landed: 9
# during merge batches, 4 during copy-out, 1 in the table switch, 2 idle,
# 0 early (13 of 16 in flight)"; in flight = merge batch or copy-out.
# What a SIGKILL of QEMU models: writes QEMU had already passed to the host
# survive (host page cache), guest-side queued I/O is lost (including what
# dm-delay holds). It does not model a disk losing its volatile cache;
# tests/vm/merge-logwrites.sh covers flush ordering with dm-log-writes.
#
# Output: one line per cut (cut 0 = the overflow cut), the distribution,
# then "crash-test: N cuts, M mismatches, F phase-B failures" (N counts cut
# 0; its failure is a mismatch when the snapshot loaded valid); exit status
# non-zero if M or F is non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-6}
seed=${CRASH_SEED:-$(date +%s)}
impl=${CRASH_IMPL:-rs}
lo=${CRASH_KILL_MIN:-20} hi=${CRASH_KILL_MAX:-45}
dw=${CRASH_DELAY:-300}
ovfdelay=${CRASH_OVF_DELAY:-4000}
work=${CRASH_OUT:-$here/out/crash}
kdir=${CRASH_KDIR:-$(bash "$here/scripts/kernel.sh")}

mkdir -p "$work"
ko=${CRASH_KO:-$here/dm-snapshot-rs.ko}
if [ -z "${CRASH_KO:-}" ] && [ ! -f "$ko" ]; then bash "$here/scripts/build-module.sh" >&2; fi
cp "$ko" "$work/module.ko"

# A shadow source tree whose tests/vm holds only lib.sh and the crash
# scenarios: run.sh and mkinitramfs.sh work relative to their own path.
tree=$work/tree
rm -rf "$tree"
mkdir -p "$tree/scripts/vm" "$tree/tests/vm"
for f in run.sh init mkinitramfs.sh results.py; do ln -s "$here/scripts/vm/$f" "$tree/scripts/vm/$f"; done
ln -s "$here/tests/vm/lib.sh" "$tree/tests/vm/lib.sh"
for f in "$here"/tests/crash/*.sh; do ln -s "$f" "$tree/tests/vm/${f##*/}"; done
ln -s "$here/tools" "$tree/tools"
# Other scenario directories mkinitramfs.sh copies (tests/leak, ...).
for dir in "$here"/tests/*/; do
  dir=${dir%/}
  [ "${dir##*/}" = vm ] || ln -s "$dir" "$tree/tests/${dir##*/}"
done

# qemu_of PID: the QEMU process started under PID (run.sh -> timeout -> qemu).
qemu_of() {
  local p c
  for p in $(ps -o pid= --ppid "$1"); do
    c=$(ps -o comm= -p "$p" || true)
    case "$c" in qemu-system*) echo "$p"; return ;; esac
    qemu_of "$p"
  done
}

# secs MS: MS milliseconds as sleep(1) takes them.
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
now_ms() { date +%s%3N; }

# watch_log FILE PID PRED: read FILE as it grows (every 20 ms, without
# forking per line) until PRED LINE succeeds for a complete line (return 0)
# or process PID is gone (return 1).
watch_log() {
  local file=$1 pid=$2 pred=$3 line part= fd
  while [ ! -e "$file" ]; do kill -0 "$pid" 2>/dev/null || return 1; sleep 0.02; done
  exec {fd}<"$file"
  while :; do
    while IFS= read -r line <&$fd; do
      line=$part$line part=
      if "$pred" "$line"; then exec {fd}<&-; return 0; fi
    done
    part=$part$line
    kill -0 "$pid" 2>/dev/null || { exec {fd}<&-; return 1; }
    sleep 0.02
  done
}

# kill_qemu PID: SIGKILL the QEMU under run.sh PID (waits for it to exist).
qpid=
kill_qemu() {
  local t=0
  [ -n "$qpid" ] || qpid=$(qemu_of "$1")
  while [ -z "$qpid" ] && kill -0 "$1" 2>/dev/null && [ $t -lt 100 ]; do sleep 0.05; qpid=$(qemu_of "$1"); t=$((t + 1)); done
  [ -z "$qpid" ] || kill -KILL "$qpid" 2>/dev/null || true
}
# find_qemu PID: remember the QEMU under run.sh PID once it runs, so that
# the kill costs no ps(1) calls.
find_qemu() {
  local t=0
  qpid=
  while [ -z "$qpid" ] && kill -0 "$1" 2>/dev/null && [ $t -lt 600 ]; do sleep 0.1; qpid=$(qemu_of "$1"); t=$((t + 1)); done
}

# Predicates for watch_log (the aim's parameters in globals).
m_round=1 m_k=1 m_nth=1 m_seen=0
is_upg_issued() { [[ $1 == "UPG round=$m_round k=$m_k issued "* ]]; }
is_stage2() { [[ $1 == "STAGE 2 round=$m_round "* ]]; }
# The m_nth-th MERGE line of round m_round, or the end of its merge.
is_merge_nth() {
  case "$1" in
    "STAGE 4 round=$m_round "*) return 0 ;;
    "MERGE round=$m_round left=0 "*) return 0 ;;
    "MERGE round=$m_round "*) m_seen=$((m_seen + 1)); [ $m_seen -ge $m_nth ] ;;
    *) return 1 ;;
  esac
}
is_overflowed() { [[ $1 == OVERFLOW-WRITTEN* || $1 == FAIL* || $1 == "=== SCENARIO"*" FAIL"* ]]; }

# run_b DIR SCENARIO: phase B on DIR's disks; sets brc.
run_b() {
  set +e
  VM_DISK_DIR=$1/disks VM_QUIET=1 SCENARIO_TIMEOUT=400 \
    VM_APPEND="${CRASH_BREAK:+dmsnap.crashbreak=1}" \
    bash "$tree/scripts/vm/run.sh" "$kdir" "$work/module.ko" "$1/b" "$2" > "$1/b.out" 2>&1
  brc=$?
  set -e
}

echo "crash-test: overflow cut + $n cuts, impl $impl, seed $seed, dm-delay ${dw} ms, timer cuts ${lo}..${hi}s"
cuts=0 mismatches=0 failures=0
declare -A landed=()
start=$(date +%s)

# ---- Cut 0: power cut right after an origin write overflowed the COW.
d=$work/cut0
rm -rf "$d"; mkdir -p "$d/disks"
VM_DISK_DIR=$d/disks VM_KILL_AFTER=300 VM_QUIET=1 SCENARIO_TIMEOUT=250 \
  VM_APPEND="dmsnap.impl=$impl dmsnap.ovfdelay=$ovfdelay" \
  bash "$tree/scripts/vm/run.sh" "$kdir" "$work/module.ko" "$d/a" crash-ovf-a > "$d/a.out" 2>&1 &
rpid=$!
find_qemu $rpid
how="no OVERFLOW-WRITTEN marker"
if watch_log "$d/a/results.log" $rpid is_overflowed; then
  t0=$(now_ms); kill_qemu $rpid
  how="killed $(( $(now_ms) - t0 )) ms after '$(grep -m1 -E '^(OVERFLOW-WRITTEN|FAIL)' "$d/a/results.log" || echo '?')'"
fi
wait $rpid || true
cuts=$((cuts + 1))
run_b "$d" crash-ovf-b
res=$(grep '^CRASH-RESULT' "$d/b/results.log" | tail -1 || true)
fa=$(grep -m1 '^FAIL' "$d/a/results.log" || true)
if [ $brc = 0 ] && [ -n "$res" ] && [ -z "$fa" ]; then
  verdict=ok; rm -rf "$d/disks"
elif grep -q '^FAIL: overflow cut: snapshot loads valid' "$d/b/results.log"; then
  verdict=MISMATCH; mismatches=$((mismatches + 1)); res=$(grep -m1 '^FAIL' "$d/b/results.log")
else
  verdict=FAILED; failures=$((failures + 1))
  res="$(grep -m1 '^FAIL' "$d/b/results.log" || true)$(grep -E '^vm: ' "$d/b.out" | tr '\n' ' ')${fa:+; phase A: $fa}"
fi
printf 'cut 0 (overflow), %s: %s %s\n' "$how" "$verdict" "${res#CRASH-RESULT }"

# ---- Cuts 1..N: aimed at copy-outs, merge batches, the table switch.
for i in $(seq 1 "$n"); do
  s=$((seed + i))
  h=$(( s * 2654435761 % 4294967296 ))
  d=$work/cut$i
  rm -rf "$d"; mkdir -p "$d/disks"
  m_round=$(( (h >> 4) % 8 == 0 ? 2 : 1 ))
  slowk=0
  case $((s % 8)) in
    0) aim=timer; delay=$(( lo + (h >> 8) % (hi - lo + 1) )); slowk=$(( 1 + (h >> 16) % 41 )) ;;
    1|2) aim=copy-out; m_k=$(( 1 + (h >> 8) % 41 )); jit=$(( (h >> 16) % 1000 )); slowk=$m_k ;;
    3) aim=switch; jit=$(( 50 + (h >> 16) % 550 )) ;;
    *) aim=merge m_seen=0
       if [ $(( (h >> 8) % 2 )) = 0 ]; then m_nth=1 jit=$(( (h >> 16) % (10 * dw + 1) ))
       else m_nth=2 jit=$(( (h >> 16) % (3 * dw + 1) )); fi ;;
  esac
  [ $aim = timer ] || delay=$((hi + 300))   # a backstop only
  VM_DISK_DIR=$d/disks VM_KILL_AFTER=$delay VM_QUIET=1 SCENARIO_TIMEOUT=600 \
    VM_APPEND="dmsnap.seed=$s dmsnap.impl=$impl dmsnap.delay=$dw dmsnap.slowk=$slowk" \
    bash "$tree/scripts/vm/run.sh" "$kdir" "$work/module.ko" "$d/a" crash-a > "$d/a.out" 2>&1 &
  rpid=$!
  find_qemu $rpid
  case $aim in
    timer) how="timer ${delay}s" pred= ;;
    copy-out) how="copy-out: $(secs $jit)s after round $m_round's write $m_k is issued" pred=is_upg_issued ;;
    switch) how="switch: $(secs $jit)s after round $m_round's upgrade" pred=is_stage2 ;;
    merge) how="merge: $(secs $jit)s after round $m_round's MERGE line $m_nth" pred=is_merge_nth ;;
  esac
  if [ -n "$pred" ] && watch_log "$d/a/results.log" $rpid $pred; then
    sleep "$(secs $jit)"
    kill_qemu $rpid
  fi
  wait $rpid || true
  cuts=$((cuts + 1))
  note=
  if grep -q '^FAIL' "$d/a/results.log"; then note="; phase A failed: $(grep '^FAIL' "$d/a/results.log" | head -1)"; fi
  if python3 -c "import json,sys; sys.exit(0 if json.load(open('$d/a/summary.json'))['splats'] else 1)" 2>/dev/null; then
    note="$note; kernel splat in phase A (see $d/a/console.log)"
  fi
  run_b "$d" crash-b
  res=$(grep '^CRASH-RESULT' "$d/b/results.log" | tail -1 || true)

  # Where the cut landed, from the evidence (see the header).
  ev_stage=$(sed -n 's/^CRASH-EVIDENCE stage=\([0-9]*\) round=\([0-9]*\).*/\1 \2/p' "$d/b/results.log" | head -1)
  ev_left=$(sed -n 's/^CRASH-EVIDENCE left0=\([0-9?]*\) of=\([0-9]*\).*/\1 \2/p' "$d/b/results.log" | head -1)
  r=${ev_stage#* } st=${ev_stage%% *} left=${ev_left%% *} of=${ev_left#* }
  last=$(grep -E "^(STAGE [0-9]|UPG|MERGE|SLOW) round=${r:-x} " "$d/a/results.log" | tail -1 || true)
  lastw=$(echo "$last" | awk '{ print $1, $2, $3, ($1 == "UPG" ? $4 : "") }' | sed 's/ *$//')
  if [ -z "$ev_stage" ]; then
    if grep -q '^CRASH-RESULT early' "$d/b/results.log"; then phase=early ev="no notes"
    else phase=unknown ev="phase B printed no evidence"; fi
  else
    ev="notes stage $st round $r, last marker '${lastw:-none}'"
    case $st in
      1) ev="$ev, COW ${left:-?} used at activation"
         case "$last" in
           UPG*issued*) phase=copy-out ;;
           *) phase=idle ;;
         esac ;;
      2) ev="$ev, merge ${left:-?} of ${of:-?} left at activation"
         if [ "${left:-?}" = "?" ]; then phase=unknown
         elif [ "$left" = 0 ]; then phase=idle
         elif [ "$left" -lt "$of" ] || [[ $last == "STAGE 3 "* || $last == MERGE* ]]; then phase=merge
         else phase=switch; fi ;;
      *) phase=idle ;;
    esac
  fi
  landed[$phase]=$(( ${landed[$phase]:-0} + 1 ))

  if [ $brc = 0 ] && [ -n "$res" ] && [ -z "$note" ]; then
    verdict=ok
    rm -rf "$d/disks"
  elif grep -q "^FAIL: .*\(got '\|load region\|image after\)" "$d/b/results.log"; then
    verdict=MISMATCH; mismatches=$((mismatches + 1))
    res=$(grep '^FAIL' "$d/b/results.log" | head -1)
  else
    verdict=FAILED; failures=$((failures + 1))
    res="$(grep '^FAIL' "$d/b/results.log" | head -1)$(grep -E '^vm: ' "$d/b.out" | tr '\n' ' ')$note"
  fi
  printf 'cut %d/%d seed %d, aim %s; landed: %s (%s): %s %s\n' "$i" "$n" "$s" "$how" "$phase" "$ev" "$verdict" "${res#CRASH-RESULT }"
done
inflight=$(( ${landed[merge]:-0} + ${landed[copy-out]:-0} ))
dist="${landed[merge]:-0} during merge batches, ${landed[copy-out]:-0} during copy-out, ${landed[switch]:-0} in the table switch, ${landed[idle]:-0} idle, ${landed[early]:-0} early"
[ -z "${landed[unknown]:-}" ] || dist="$dist, ${landed[unknown]} unknown"
echo "crash-test: cuts landed: $dist ($inflight of $n in flight)"
echo "crash-test: $cuts cuts, $mismatches mismatches, $failures phase-B failures ($(( $(date +%s) - start ))s, impl $impl, seed $seed)"
[ "$mismatches" = 0 ] && [ "$failures" = 0 ]

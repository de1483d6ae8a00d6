#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Kill-QEMU crash test of snapshot copy-out and snapshot-merge (issue 4).
#
#   scripts/crash-test.sh [N]        N cuts (default 6), against the Rust module
#
# Environment:
#   CRASH_SEED=S      base seed (default: the time; printed, reuse it to
#                     reproduce: cut i uses seed S+i for everything, the kill
#                     delay included)
#   CRASH_IMPL=rs|upstream   module under test (default rs)
#   CRASH_KO=path     the module (default: ./dm-snapshot-rs.ko, built if
#                     missing; copied first, so a rebuild meanwhile is harmless)
#   CRASH_KILL_MIN / CRASH_KILL_MAX   kill window in seconds after QEMU
#                     starts, for the timer cuts (default 20..45; the guest
#                     boots in ~5 s and sets up for ~10 s on an idle 2-CPU
#                     host, then runs merge rounds of ~5-10 s; on a loaded
#                     host a timer cut can land before the first snapshot:
#                     it is then reported as "early", nothing to check)
#   CRASH_BREAK=1     self-test: phase B's model forgets the last two
#                     acknowledged load writes, so cuts with acks must fail
#   CRASH_OUT=dir     work directory (default out/crash); failed cuts keep
#                     their disk images there for reproduction
# Many cuts: `CRASH_SEED=1000 scripts/crash-test.sh 200` (about a minute per
# cut); several such runs with different seeds can run in parallel with
# different CRASH_OUT directories.
#
# Each cut i, on fresh disks:
#   phase A (tests/crash/crash-a.sh) takes a snapshot, writes the origin
#     (copy-outs), merges it back with LVM's table sequence while a stamped
#     write load hits the merging device, goes back to linear, and repeats
#     in rounds; notes of what must be on disk go O_DSYNC to /dev/vdd.
#     The host SIGKILLs QEMU after a seeded random delay (VM_KILL_AFTER,
#     CRASH_KILL_MIN..MAX s after QEMU starts) for one cut in three, and
#     for the others 0..3.0 s after the guest reports that round 1 or 2's
#     upgrade is written, so that cuts land around the merge table switch,
#     in the merge and in the load (a timer alone mostly hits the upgrade:
#     the merge itself takes well under a second).
#   phase B (tests/crash/crash-b.sh) boots on the same disks, activates as
#     LVM would (the snapshot after a cut during the upgrade, snapshot-merge
#     directly after a cut during the merge), waits for the merge, and
#     checks byte for byte: the snapshot image S outside the load region,
#     and inside it S plus the acknowledged load writes (plus possibly the
#     one write that was in flight).
# What a SIGKILL of QEMU models: writes QEMU had already passed to the host
# survive (host page cache), guest-side queued I/O is lost. It does not
# model a disk losing its volatile cache; tests/vm/merge-logwrites.sh covers
# flush ordering with dm-log-writes.
#
# Output: one line per cut, then "crash-test: N cuts, M mismatches, F phase-B
# failures"; exit status non-zero if M or F is non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-6}
seed=${CRASH_SEED:-$(date +%s)}
impl=${CRASH_IMPL:-rs}
lo=${CRASH_KILL_MIN:-20} hi=${CRASH_KILL_MAX:-45}
work=${CRASH_OUT:-$here/out/crash}
kdir=$(bash "$here/scripts/kernel.sh")

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
ln -s "$here/tests/crash/crash-a.sh" "$tree/tests/vm/crash-a.sh"
ln -s "$here/tests/crash/crash-b.sh" "$tree/tests/vm/crash-b.sh"
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

echo "crash-test: $n cuts, impl $impl, seed $seed, kill after ${lo}..${hi}s"
cuts=0 mismatches=0 failures=0
declare -A where=()
start=$(date +%s)
for i in $(seq 1 "$n"); do
  s=$((seed + i))
  delay=$(( lo + (s * 2654435761 % 4294967296) % (hi - lo + 1) ))
  d=$work/cut$i
  rm -rf "$d"; mkdir -p "$d/disks"
  # Two cuts in three aim at the merge (below); the timer is then only a
  # backstop.
  [ $((s % 3)) = 0 ] || delay=$((hi + 300))
  VM_DISK_DIR=$d/disks VM_KILL_AFTER=$delay VM_QUIET=1 SCENARIO_TIMEOUT=600 \
    VM_APPEND="dmsnap.seed=$s dmsnap.impl=$impl" \
    bash "$tree/scripts/vm/run.sh" "$kdir" "$work/module.ko" "$d/a" crash-a > "$d/a.out" 2>&1 &
  rpid=$!
  how="timer ${delay}s"
  if [ $((s % 3)) != 0 ]; then
    # SIGKILL QEMU 0..3.0 s after the guest reports a round's upgrade done
    # (the merge table switch, the merge and the load follow).
    round=$((1 + s % 2)) frac=$(( s * 7 % 31 ))
    how="$(printf '%d.%ds' $((frac / 10)) $((frac % 10))) after round $round's upgrade"
    while kill -0 $rpid 2>/dev/null; do
      grep -q "^STAGE 2 round=$round " "$d/a/results.log" 2>/dev/null && break
      sleep 0.05
    done
    sleep "$(printf '%d.%d' $((frac / 10)) $((frac % 10)))"
    q=$(qemu_of $rpid)
    [ -z "$q" ] || kill -KILL "$q" 2>/dev/null || true
  fi
  wait $rpid || true
  last=$(grep '^STAGE' "$d/a/results.log" | tail -1 || true)
  cut_at="$(echo "$last" | awk '{ print "stage " $2 " " $3 }')"
  cuts=$((cuts + 1))
  note=
  if grep -q '^FAIL' "$d/a/results.log"; then note="; phase A failed: $(grep '^FAIL' "$d/a/results.log" | head -1)"; fi
  if python3 -c "import json,sys; sys.exit(0 if json.load(open('$d/a/summary.json'))['splats'] else 1)" 2>/dev/null; then
    note="$note; kernel splat in phase A (see $d/a/console.log)"
  fi
  set +e
  VM_DISK_DIR=$d/disks VM_QUIET=1 SCENARIO_TIMEOUT=400 \
    VM_APPEND="${CRASH_BREAK:+dmsnap.crashbreak=1}" \
    bash "$tree/scripts/vm/run.sh" "$kdir" "$work/module.ko" "$d/b" crash-b > "$d/b.out" 2>&1
  brc=$?
  set -e
  res=$(grep '^CRASH-RESULT' "$d/b/results.log" | tail -1 || true)
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
  k=$(echo "$last" | awk '{ print $2 }'); where[${k:-none}]=$(( ${where[${k:-none}]:-0} + 1 ))
  printf 'cut %d/%d seed %d, kill %s (last: %s): %s %s\n' "$i" "$n" "$s" "$how" "${cut_at:-no stage line}" "$verdict" "${res#CRASH-RESULT }"
done
hist=
for k in $(printf '%s\n' "${!where[@]}" | sort); do hist="$hist stage$k=${where[$k]}"; done
echo "crash-test: cuts landed after:$hist (stage 1 upgrading, 2-3 merging, 4 merged, 5 linear)"
echo "crash-test: $cuts cuts, $mismatches mismatches, $failures phase-B failures ($(( $(date +%s) - start ))s, impl $impl, seed $seed)"
[ "$mismatches" = 0 ] && [ "$failures" = 0 ]

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The whole test suite, from a fresh machine:
#   1. setup (packages, rust-src, bindgen)       scripts/setup.sh
#   2. test kernel (cached)                       scripts/kernel.sh
#   3. module build: no rustc/clippy/gcc warning  scripts/build-module.sh
#   4. host crate: cargo test + cargo clippy
#   5. harness: unit tests of the VM verdict logic (tests/harness)
#   6. one VM run: KUnit suites and every scenario in tests/vm/
#   7. a VM run with kmemleak=on (tests/leak/)
#   8. the crash test (scripts/crash-test.sh, CRASH_CUTS cuts, default 4)
# Ends with one line "N passed, N failed" counting cargo tests, build checks,
# KUnit cases and VM scenarios. Exits non-zero if anything failed.
#
# Options (environment): SCENARIOS="a b" runs only those VM scenarios;
# OUT=dir keeps logs there (default out/test).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${OUT:-$here/out/test}
mkdir -p "$out"
passed=0 failed=0
declare -a summary

record() {  # record LAYER PASSED FAILED
  passed=$((passed + $2)); failed=$((failed + $3))
  summary+=("$(printf '%-10s %4d passed, %d failed' "$1:" "$2" "$3")")
}
step() { echo; echo "=== $*"; }
abort() {
  echo "test: $*"
  record "fatal" 0 1
  printf '%s\n' "${summary[@]}"
  echo "$passed passed, $failed failed"
  exit 1
}

step "setup"
bash scripts/setup.sh || abort "setup failed"

step "kernel"
kdir=$(bash scripts/kernel.sh) || abort "kernel build failed"
echo "KDIR=$kdir"

step "module build (CLIPPY=1 W=1, warnings fail)"
if ko=$(KDIR=$kdir bash scripts/build-module.sh); then
  record build 1 0
else
  record build 0 1
  ko=""
fi

step "host crate (cargo test, cargo clippy)"
{ cargo test --locked 2>&1; cargo test --locked --manifest-path tools/log-writes-replay/Cargo.toml 2>&1; } | tee "$out/cargo-test.log"
cp=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$out/cargo-test.log" | awk '{s += $4} END {print s + 0}')
cf=$(grep -Eo '[0-9]+ failed' "$out/cargo-test.log" | awk '{s += $1} END {print s + 0}')
if ! grep -q 'test result:' "$out/cargo-test.log"; then cf=$((cf + 1)); fi
record cargo "$cp" "$cf"
if cargo clippy --locked --all-targets -- -D warnings 2>&1 | tee "$out/cargo-clippy.log" | tail -2; then
  record clippy 1 0
else
  record clippy 0 1
fi

step "harness (the VM verdict logic itself)"
python3 -m unittest discover -s tests/harness -p 'test_*.py' -v 2>&1 | tee "$out/harness.log" | tail -3
hp=$(grep -c ' \.\.\. ok$' "$out/harness.log")
hf=$(grep -Ec ' \.\.\. (FAIL|ERROR)$' "$out/harness.log")
grep -q '^OK' "$out/harness.log" || [ "$hf" -gt 0 ] || hf=1
record harness "$hp" "$hf"

step "VM (QEMU/TCG): KUnit and scenarios"
if [ -n "$ko" ]; then
  if [ -n "${SCENARIOS:-}" ]; then
    scenarios=$SCENARIOS
  else
    # kunit first, then the rest in name order (not stock-smoke: the
    # upstream-only smoke test for stock kernels, scripts/stock/).
    scenarios="kunit $(ls tests/vm/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -vx 'lib\|kunit\|stock-smoke' | sort | tr '\n' ' ')"
  fi
  SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600} bash scripts/vm/run.sh "$kdir" "$ko" "$out/vm" $scenarios | tee "$out/vm.log"
  kp=$(sed -n 's/^kunit: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$out/vm.log")
  kf=$(sed -n 's/^kunit: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$out/vm.log")
  sp=$(sed -n 's/^scenarios: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$out/vm.log")
  sf=$(sed -n 's/^scenarios: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$out/vm.log")
  [ -n "$kp" ] || { kp=0; kf=1; }
  [ -n "$sp" ] || { sp=0; sf=1; }
  record kunit "$kp" "$kf"
  record vm "$sp" "$sf"
  echo "logs: $out/vm/console.log (kernel), $out/vm/results.log (scenarios)"
  if [ -z "${SCENARIOS:-}" ]; then
    step "VM with kmemleak=on: leak check after every target and unload"
    VM_APPEND="kmemleak=on" VM_MEM=2048 bash scripts/vm/run.sh "$kdir" "$ko" "$out/vm-leak" leak-check | tee "$out/vm-leak.log"
    lp=$(sed -n 's/^scenarios: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$out/vm-leak.log")
    lf=$(sed -n 's/^scenarios: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$out/vm-leak.log")
    [ -n "$lp" ] || { lp=0; lf=1; }
    record leak "$lp" "$lf"

    step "crash test: SIGKILL of QEMU during copy-out and merge, then recovery"
    CRASH_KO=$ko CRASH_OUT=$out/crash bash scripts/crash-test.sh "${CRASH_CUTS:-4}" | tee "$out/crash.log"
    cl=$(grep -E '^crash-test: [0-9]+ cuts, [0-9]+ mismatches, [0-9]+ phase-B failures' "$out/crash.log" | tail -1)
    if [ -n "$cl" ]; then
      cuts=$(echo "$cl" | awk '{print $2}'); mis=$(echo "$cl" | awk '{print $4}'); pbf=$(echo "$cl" | awk '{print $6}')
      record crash $(( cuts - mis - pbf )) $(( mis + pbf ))
    else
      record crash 0 1
    fi
  fi
else
  echo "skipped: no module"
  record vm 0 1
fi

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The whole test suite, from a fresh machine:
#   1. setup (packages, rust-src, bindgen)       scripts/setup.sh
#   2. main test kernel, 7.3 (cached)             scripts/kernel.sh
#   3. module build: no rustc/clippy/gcc warning  scripts/build-module.sh
#   4. host workspace: cargo test + cargo clippy (the pure core and the
#      dmsnap tool, whose fuzz target runs for DMSNAP_FUZZ_SECS, default 30),
#      cargo install of dmsnap
#   5. harness: unit tests of the VM verdict logic (tests/harness)
#   6. one VM run: KUnit suites and every scenario in tests/vm/
#   7. a VM run with kmemleak=on (tests/leak/)
#   8. the crash test (scripts/crash-test.sh, CRASH_CUTS cuts, default 4)
#   9. Debian's unmodified stock kernel (scripts/stock/): the module built
#      with Debian's own toolchain in a trixie chroot, its imports checked
#      against the kernel's Module.symvers, the differential scenarios
#      ($STOCK_SCENARIOS) against the distro's dm-snapshot.ko, one crash cut
#  10. the DKMS package on the stock kernel (scripts/stock/test-dkms.sh):
#      install, modprobe and LVM in the VM, initramfs, upgrade, removal
#  11. Linux 6.12 LTS: kernel, module build, KUnit, the smoke scenarios
#      ($SMOKE_6_12) and one crash cut
#  12. Linux 7.2: the module compiled (rustc, clippy, gcc) after `make prepare`
# Ends with one line "N passed, N failed" counting cargo tests, build checks,
# KUnit cases and VM scenarios. Exits non-zero if anything failed.
#
# Options (environment): SCENARIOS="a b" runs only those VM scenarios (and
# skips the leak, crash and 6.12 stages); OUT=dir keeps logs there (default
# out/test).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
out=${OUT:-$here/out/test}
mkdir -p "$out"
passed=0 failed=0
declare -a summary

failure_logs=()
record() {  # record LAYER PASSED FAILED [LOG]: LOG's failure lines are shown at the end
  passed=$((passed + $2)); failed=$((failed + $3))
  summary+=("$(printf '%-10s %4d passed, %d failed' "$1:" "$2" "$3")")
  if [ "$3" != 0 ] && [ -n "${4:-}" ]; then failure_logs+=("$1:$4"); fi
}
# The failure lines of each failed layer's log, just above the summary (the
# end of a long log is what a CI page shows).
show_failures() {
  local e log pat='FAIL|[Ee]rror|stopped at|mismatch|refus|panic|Oops|BUG'
  [ "${#failure_logs[@]}" != 0 ] || return 0
  step "failures"
  for e in "${failure_logs[@]}"; do
    log=${e#*:}
    echo "--- ${e%%:*} ($log):"
    if grep -qE "$pat" "$log" 2>/dev/null; then
      grep -E "$pat" "$log" | tail -15
    else
      echo "(no failure lines; the log's end:)"; tail -15 "$log" 2>/dev/null || true
    fi
  done
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

# The 6.12 LTS smoke set: one of each kind (snapshot I/O, merge, LVM,
# reactivation, a dm-delay race case, the stats message). The full race suite runs on 7.3;
# SMOKE_6_12="... race-snap race-merge" adds the rest (about 8 minutes).
# snap-fio-verify (1.5 minutes) runs on 7.3 and the stock kernel only, to
# keep a cold run under 75 minutes.
SMOKE_6_12=${SMOKE_6_12:-snap-smoke snap-basic-rw merge-basic lvm-merge snap-reactivate race-review snap-stats}
# On Debian's stock kernel (no KUnit there): snapshot, merge, LVM.
STOCK_SCENARIOS=${STOCK_SCENARIOS:-stock-smoke snap-smoke snap-basic-rw snap-fio-verify merge-basic lvm-snapshot lvm-merge}

# build_for SERIES KDIR: the module built for KDIR, copied out of the tree
# (the next build cleans it) to $out/dm-snapshot-rs-SERIES.ko.
build_for() {
  KDIR=$2 bash scripts/build-module.sh >/dev/null || return 1
  cp dm-snapshot-rs.ko "$out/dm-snapshot-rs-$1.ko" && echo "$out/dm-snapshot-rs-$1.ko"
}

# count_record LAYER WHAT LOG: records run.sh's "WHAT: N passed, M failed"
# line of LOG (one failure if the line is missing).
count_record() {
  local p f
  p=$(sed -n "s/^$2: \\([0-9]*\\) passed, \\([0-9]*\\) failed\$/\\1/p" "$3")
  f=$(sed -n "s/^$2: \\([0-9]*\\) passed, \\([0-9]*\\) failed\$/\\2/p" "$3")
  [ -n "$p" ] || { p=0; f=1; }
  record "$1" "$p" "$f" "$3"
}

# vm_record SUFFIX LOG: records the KUnit and scenario counts of a run.sh log.
vm_record() {
  count_record "kunit$1" kunit "$2"
  count_record "vm$1" scenarios "$2"
}

# crash_record LAYER LOG: records a crash-test.sh log's cuts.
crash_record() {
  local cl cuts mis pbf
  cl=$(grep -E '^crash-test: [0-9]+ cuts, [0-9]+ mismatches, [0-9]+ phase-B failures' "$2" | tail -1)
  if [ -n "$cl" ]; then
    cuts=$(echo "$cl" | awk '{print $2}'); mis=$(echo "$cl" | awk '{print $4}'); pbf=$(echo "$cl" | awk '{print $6}')
    record "$1" $(( cuts - mis - pbf )) $(( mis + pbf )) "$2"
  else
    record "$1" 0 1 "$2"
  fi
}

step "kernel (7.3, the main test kernel)"
kdir=$(KERNEL_SERIES=7.3 bash scripts/kernel.sh) || abort "kernel build failed"
echo "KDIR=$kdir"

step "module build for 7.3 (CLIPPY=1 W=1, warnings fail)"
if ko=$(build_for 7.3 "$kdir"); then
  record build 1 0
else
  record build 0 1
  ko=""
fi

step "host workspace (cargo test, cargo clippy): pure core, dmsnap, log-writes-replay"
{ DMSNAP_FUZZ_SECS=${DMSNAP_FUZZ_SECS:-30} cargo test --locked --workspace 2>&1; cargo test --locked --manifest-path tools/log-writes-replay/Cargo.toml 2>&1; } | tee "$out/cargo-test.log"
cp=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$out/cargo-test.log" | awk '{s += $4} END {print s + 0}')
cf=$(grep -Eo '[0-9]+ failed' "$out/cargo-test.log" | awk '{s += $1} END {print s + 0}')
if ! grep -q 'test result:' "$out/cargo-test.log"; then cf=$((cf + 1)); fi
record cargo "$cp" "$cf" "$out/cargo-test.log"
if cargo clippy --locked --workspace --all-targets -- -D warnings 2>&1 | tee "$out/cargo-clippy.log" | tail -2; then
  record clippy 1 0
else
  record clippy 0 1 "$out/cargo-clippy.log"
fi

# `cargo install` of the tool, as the README says (sharing target/, so the
# initramfs build below reuses it), and the installed binary runs.
if cargo install --quiet --locked --path tools/dmsnap --target-dir target --root "$out/dmsnap-install" --force 2>&1 | tail -3 &&
   "$out/dmsnap-install/bin/dmsnap" --version; then
  record install 1 0
else
  record install 0 1
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
    # kunit first, then the rest in name order (not stock-smoke, the
    # upstream-only smoke test for stock kernels, nor dkms-modprobe, which
    # needs the DKMS-installed tree: both run in their own stages below).
    scenarios="kunit $(ls tests/vm/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -vx 'lib\|kunit\|stock-smoke\|dkms-modprobe' | sort | tr '\n' ' ')"
  fi
  SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600} bash scripts/vm/run.sh "$kdir" "$ko" "$out/vm" $scenarios | tee "$out/vm.log"
  vm_record "" "$out/vm.log"
  echo "logs: $out/vm/console.log (kernel), $out/vm/results.log (scenarios)"
  if [ -z "${SCENARIOS:-}" ]; then
    step "VM with kmemleak=on: leak check after every target and unload"
    VM_APPEND="kmemleak=on" VM_MEM=2048 bash scripts/vm/run.sh "$kdir" "$ko" "$out/vm-leak" leak-check | tee "$out/vm-leak.log"
    count_record leak scenarios "$out/vm-leak.log"

    step "crash test: SIGKILL of QEMU during copy-out and merge, then recovery"
    KERNEL_SERIES=7.3 CRASH_KO=$ko CRASH_OUT=$out/crash bash scripts/crash-test.sh "${CRASH_CUTS:-4}" | tee "$out/crash.log"
    crash_record crash "$out/crash.log"
  fi
else
  echo "skipped: no module"
  record vm 0 1
fi

if [ -z "${SCENARIOS:-}" ]; then
  step "Debian's stock kernel, unmodified: build with Debian's toolchain, symbols, scenarios, one crash cut"
  if ! sk=$(bash scripts/stock/vm-kernel.sh); then
    record build-stock 0 1
  elif ! sko=$(bash scripts/stock/build-module.sh "$here"); then
    record build-stock 0 1
  else
    record build-stock 1 0
    SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600} bash scripts/vm/run.sh "$sk" "$sko" "$out/vm-stock" $STOCK_SCENARIOS | tee "$out/vm-stock.log"
    count_record vm-stock scenarios "$out/vm-stock.log"
    CRASH_KDIR=$sk CRASH_KO=$sko CRASH_OUT=$out/crash-stock bash scripts/crash-test.sh 1 | tee "$out/crash-stock.log"
    crash_record crash-stock "$out/crash-stock.log"
  fi
fi

if [ -z "${SCENARIOS:-}" ]; then
  step "the DKMS package on the stock kernel: install, modprobe, LVM, initramfs, upgrade, removal, refusals"
  bash scripts/stock/test-dkms.sh 2>&1 | tee "$out/dkms.log"
  dl=$(grep -E '^dkms-test: [0-9]+ passed, [0-9]+ failed' "$out/dkms.log" | tail -1)
  if [ -n "$dl" ]; then
    record dkms "$(echo "$dl" | awk '{print $2}')" "$(echo "$dl" | awk '{print $4}')" "$out/dkms.log"
  else
    record dkms 0 1 "$out/dkms.log"
  fi
fi

if [ -z "${SCENARIOS:-}" ]; then
  step "Linux 6.12 LTS: kernel, module build, KUnit, smoke scenarios, one crash cut"
  if ! kdir612=$(KERNEL_SERIES=6.12 bash scripts/kernel.sh); then
    record build-6.12 0 1
  elif ! ko612=$(build_for 6.12 "$kdir612"); then
    record build-6.12 0 1
  else
    record build-6.12 1 0
    SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600} bash scripts/vm/run.sh "$kdir612" "$ko612" "$out/vm-6.12" kunit $SMOKE_6_12 | tee "$out/vm-6.12.log"
    vm_record -6.12 "$out/vm-6.12.log"
    KERNEL_SERIES=6.12 CRASH_KO=$ko612 CRASH_OUT=$out/crash-6.12 bash scripts/crash-test.sh 1 | tee "$out/crash-6.12.log"
    crash_record crash-6.12 "$out/crash-6.12.log"
  fi
fi

if [ -z "${SCENARIOS:-}" ]; then
  step "Linux 7.2: the module compiled against make prepare (CLIPPY=1 W=1)"
  if kdir72=$(KERNEL_SERIES=7.2 KERNEL_BUILD=prepare bash scripts/kernel.sh) &&
     KDIR=$kdir72 bash scripts/build-module.sh >/dev/null; then
    record build-7.2 1 0
  else
    record build-7.2 0 1
  fi
fi

echo
show_failures
echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

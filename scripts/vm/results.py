#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Judge one VM run: scenario verdicts, KUnit (KTAP) results, kernel splats.

Usage: results.py OUTDIR SCENARIO...

Reads OUTDIR/results.log (scenario output and verdicts) and
OUTDIR/console.log (kernel log with KTAP and scenario markers). A scenario
fails if its script failed, never finished, or the kernel logged an oops,
BUG, WARNING, lockdep report or hung task while it ran. Writes
OUTDIR/summary.json and prints, as its last two lines:
    kunit: P passed, F failed
    scenarios: P passed, F failed
"""
import json
import re
import sys

TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
SPLATS = [
    re.compile(p)
    for p in (
        r"\bBUG: ",
        r"kernel BUG at",
        r"^WARNING: ",
        r"\bOops\b",
        r"general protection fault",
        r"Unable to handle kernel",
        r"possible circular locking dependency",
        r"possible recursive locking",
        r"inconsistent lock state",
        r"suspicious RCU usage",
        r"INFO: task .* blocked for more than",
        r"INFO: rcu_.* detected stalls",
        r"watchdog: BUG: soft lockup",
        r"Kernel panic",
        r"UBSAN:",
        r"unreferenced object 0x",  # kmemleak
        r"list_add corruption|list_del corruption",
        r"ODEBUG:",
        r"rust_panic|panicked at",
    )
]
KTAP_CASE = re.compile(r"^    (not ok|ok) (\d+) (\S+)(.*)$")
KTAP_SUITE = re.compile(r"^    # Subtest: (\S+)")


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [TS.sub("", l.rstrip("\r")) for l in data.split("\n")]


def main():
    out, scenarios = sys.argv[1], sys.argv[2:]
    results = read_lines(f"{out}/results.log")
    console = read_lines(f"{out}/console.log")

    verdict = {s: ("NOT RUN", None) for s in scenarios}
    for line in results:
        m = re.match(r"^=== SCENARIO (\S+) (PASS|FAIL) rc=(\d+) secs=(\d+)", line)
        if m:
            verdict[m.group(1)] = (m.group(2), int(m.group(4)))

    current = "boot"
    splats = {}
    suite = None
    kunit = []
    for line in console:
        m = re.match(r"^=== SCENARIO (\S+) (BEGIN|END)", line)
        if m:
            current = m.group(1) if m.group(2) == "BEGIN" else "between scenarios"
            continue
        if any(p.search(line) for p in SPLATS) and not line.startswith("=== "):
            splats.setdefault(current, []).append(line)
        m = KTAP_SUITE.match(line)
        if m:
            suite = m.group(1)
            continue
        m = KTAP_CASE.match(line)
        # KUnit runs the module's suites at every load; the `kunit` scenario
        # is the one that counts, but a failed case anywhere fails the run.
        if m and suite and current != "kunit" and m.group(1) == "not ok":
            splats.setdefault(current, []).append(f"KUnit case failed: {suite}.{m.group(3)}")
            continue
        if m and suite and current == "kunit":
            directive = m.group(4)
            status = "ok" if m.group(1) == "ok" else "not ok"
            if "# SKIP" in directive:
                status = "skip"
            kunit.append({"suite": suite, "case": m.group(3), "status": status})

    failed_scenarios = 0
    passed_scenarios = 0
    report = {"scenarios": {}, "kunit": kunit, "splats": splats}
    for s in scenarios:
        v, secs = verdict[s]
        why = []
        if v != "PASS":
            why.append("script failed" if v == "FAIL" else "did not finish (VM hung or died)")
        if s in splats:
            why.append(f"kernel splat: {splats[s][0].strip()}")
        ok = not why
        passed_scenarios += ok
        failed_scenarios += not ok
        report["scenarios"][s] = {"ok": ok, "secs": secs, "why": why}
        t = f" ({secs}s)" if secs is not None else ""
        print(f"vm: {s}: {'PASS' if ok else 'FAIL'}{t}" + (f" -- {'; '.join(why)}" if why else ""))
    # Splats outside any scenario (boot, teardown) fail the run as well.
    for where in splats:
        if where not in scenarios:
            failed_scenarios += 1
            print(f"vm: kernel splat during {where}: {splats[where][0].strip()}")
    if "kunit" in scenarios and not kunit:
        failed_scenarios += 1
        print("vm: no KTAP results found in the console log")

    kp = sum(1 for c in kunit if c["status"] in ("ok", "skip"))
    kf = sum(1 for c in kunit if c["status"] == "not ok")
    for c in kunit:
        if c["status"] != "ok":
            print(f"kunit: {c['suite']}.{c['case']}: {c['status']}")
    with open(f"{out}/summary.json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"kunit: {kp} passed, {kf} failed")
    print(f"scenarios: {passed_scenarios} passed, {failed_scenarios} failed")
    return 1 if (kf or failed_scenarios) else 0


if __name__ == "__main__":
    sys.exit(main())

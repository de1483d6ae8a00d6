# SPDX-License-Identifier: GPL-2.0
"""Unit tests for scripts/vm/results.py: the VM run's verdicts must catch
failed scripts, unfinished scenarios, KUnit failures and kernel splats."""
import os
import subprocess
import sys
import tempfile
import unittest

RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "vm", "results.py")

KTAP_OK = """[    4.1] KTAP version 1
[    4.1] 1..1
[    4.2]     KTAP version 1
[    4.2]     # Subtest: suite_a
[    4.2]     1..3
[    4.3]     ok 1 case_one
[    4.3]     ok 2 case_two
[    4.3]     ok 3 case_three # SKIP no device
[    4.4] ok 1 suite_a
"""


def run(console, results, scenarios):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "console.log"), "w") as f:
            f.write(console)
        with open(os.path.join(d, "results.log"), "w") as f:
            f.write(results)
        p = subprocess.run([sys.executable, RESULTS, d, *scenarios], capture_output=True, text=True)
        return p.returncode, p.stdout.strip().splitlines()


def verdict(name, ok=True, secs=1):
    return f"=== SCENARIO {name} BEGIN\n=== SCENARIO {name} {'PASS' if ok else 'FAIL'} rc={0 if ok else 1} secs={secs}\n"


def wrap(name, body):
    return f"[ 1.0] === SCENARIO {name} BEGIN\n{body}[ 9.0] === SCENARIO {name} END\n"


class ResultsTest(unittest.TestCase):
    def test_all_pass(self):
        rc, out = run(wrap("kunit", KTAP_OK) + wrap("b", ""), verdict("kunit") + verdict("b"), ["kunit", "b"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out[-2:], ["kunit: 3 passed, 0 failed", "scenarios: 2 passed, 0 failed"])

    def test_failed_script(self):
        rc, out = run("", verdict("a", ok=False), ["a"])
        self.assertEqual(rc, 1)
        self.assertIn("scenarios: 0 passed, 1 failed", out)

    def test_unfinished_scenario_fails(self):
        rc, out = run("", verdict("a"), ["a", "b"])
        self.assertEqual(rc, 1)
        self.assertTrue(any("vm: b: FAIL" in l and "did not finish" in l for l in out), out)

    def test_kunit_failure_counts(self):
        bad = KTAP_OK.replace("    ok 2 case_two", "    not ok 2 case_two")
        rc, out = run(wrap("kunit", bad), verdict("kunit"), ["kunit"])
        self.assertEqual(rc, 1)
        self.assertIn("kunit: 2 passed, 1 failed", out)

    def test_kunit_failure_outside_kunit_scenario_fails_that_scenario(self):
        bad = KTAP_OK.replace("    ok 1 case_one", "    not ok 1 case_one")
        rc, out = run(wrap("other", bad), verdict("other"), ["other"])
        self.assertEqual(rc, 1)
        self.assertIn("scenarios: 0 passed, 1 failed", out)

    def test_no_ktap_in_kunit_scenario_fails(self):
        rc, out = run(wrap("kunit", ""), verdict("kunit"), ["kunit"])
        self.assertEqual(rc, 1)

    def test_splats_fail_their_scenario(self):
        for splat in (
            "[ 5.0] WARNING: CPU: 0 PID: 1 at drivers/md/dm.c:123 foo+0x1/0x2",
            "[ 5.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[ 5.0] Oops: general protection fault, probably for non-canonical address",
            "[ 5.0] WARNING: possible circular locking dependency detected",
            "[ 5.0] INFO: task dmsetup:123 blocked for more than 60 seconds.",
            "[ 5.0] BUG: sleeping function called from invalid context at mm/slab.c:1",
            "[ 5.0] rust_kernel: panicked at src/foo.rs:1:1:",
        ):
            rc, out = run(wrap("a", splat + "\n"), verdict("a"), ["a"])
            self.assertEqual(rc, 1, splat)
            self.assertTrue(any("kernel splat" in l for l in out), (splat, out))

    def test_splat_outside_scenarios_fails_run(self):
        rc, out = run("[ 0.5] BUG: unable to handle page fault\n" + wrap("a", ""), verdict("a"), ["a"])
        self.assertEqual(rc, 1)
        self.assertTrue(any("during boot" in l for l in out), out)


if __name__ == "__main__":
    unittest.main()

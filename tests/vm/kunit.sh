# SPDX-License-Identifier: GPL-2.0
# Load the module: KUnit runs its suites at load time (the host parses the
# KTAP output from the console). /dev/vdd is the scratch disk for the I/O
# self-tests. Also checks what dmsetup sees.
. /tests/lib.sh
load_module rs kunit_scratch_dev=/dev/vdd
dmsetup targets > /tmp/targets
cat /tmp/targets
grep -q '^snapshot-origin  *v1\.9\.0$' /tmp/targets || fail "snapshot-origin v1.9.0 not listed"
[ -d /sys/module/$RS/parameters ] || fail "no parameters directory"
expect_eq snapshot_cow_threshold "$(cat /sys/module/$RS/parameters/snapshot_cow_threshold)" 2048
expect_eq snapshot_copy_throttle "$(cat /sys/module/$RS/parameters/snapshot_copy_throttle)" 100
unload_modules

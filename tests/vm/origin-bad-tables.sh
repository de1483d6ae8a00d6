# SPDX-License-Identifier: GPL-2.0
# Bad snapshot-origin table lines are refused with upstream's messages.
. /tests/lib.sh
load_module rs
size=$(sectors /dev/vda)
expect_ctr_fail bad "0 $size snapshot-origin" "origin: incorrect number of arguments"
expect_ctr_fail bad "0 $size snapshot-origin /dev/vda /dev/vdb" "origin: incorrect number of arguments"
expect_ctr_fail bad "0 $size snapshot-origin /dev/does-not-exist" "Cannot get target device"
expect_ctr_fail bad "0 $size snapshot-origin 999:999" "Cannot get target device"
# A failed constructor leaves nothing behind: the module unloads.
unload_modules

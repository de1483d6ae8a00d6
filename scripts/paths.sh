#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build everything (kernel cached) and print, as shell assignments, the paths
# another test rig needs to boot its own scenarios against both modules:
#   eval "$(scripts/paths.sh)"; qemu-system-x86_64 -kernel "$KERNEL_IMAGE" ...
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh" >&2
kdir=$(bash "$here/scripts/kernel.sh")
ko=$(KDIR=$kdir bash "$here/scripts/build-module.sh")
cat <<OUT
KDIR=$kdir
KERNEL_IMAGE=$kdir/arch/x86/boot/bzImage
DM_BUFIO_KO=$kdir/drivers/md/dm-bufio.ko
UPSTREAM_DM_SNAPSHOT_KO=$kdir/drivers/md/dm-snapshot.ko
DM_FLAKEY_KO=$kdir/drivers/md/dm-flakey.ko
DM_LOG_WRITES_KO=$kdir/drivers/md/dm-log-writes.ko
DM_SNAPSHOT_RS_KO=$ko
OUT

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The main job: build everything, boot the VM and run the demo scenario
# (tests/vm/demo.sh), narrating each step with timings.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh" >&2
kdir=$(bash "$here/scripts/kernel.sh")
ko=$(KDIR=$kdir bash "$here/scripts/build-module.sh")
out=${OUT:-$here/out/demo}
echo "demo: booting the test kernel in QEMU (logs in $out)"
bash "$here/scripts/vm/run.sh" "$kdir" "$ko" "$out" demo

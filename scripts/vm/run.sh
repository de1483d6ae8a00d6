#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boot the test kernel in QEMU (TCG) once and run guest scenarios.
#   run.sh KDIR MODULE.ko OUTDIR SCENARIO...
# Environment: SCENARIO_TIMEOUT (seconds per scenario, default 300),
# VM_MEM (MiB, default 1536), VM_CPUS (default 2).
# Leaves console.log, results.log and summary.json in OUTDIR and prints the
# per-scenario verdicts and KUnit results; exits non-zero on any failure.
set -euo pipefail
kdir=$1 ko=$2 out=$3; shift 3
here=$(cd "$(dirname "$0")/../.." && pwd)
per=${SCENARIO_TIMEOUT:-300}
mkdir -p "$out"
rm -f "$out"/console.log "$out"/disk*.img

"$here/scripts/vm/mkinitramfs.sh" "$out/initramfs.cpio.gz" "$kdir" "$ko"

# Sparse backing files: by default vda, vdb 512 MiB (origins), vdc, vdd
# 256 MiB (COWs). VM_DISKS overrides the sizes (and the number of disks).
drives=()
i=0
for size in ${VM_DISKS:-512M 512M 256M 256M}; do
  truncate -s "$size" "$out/disk$i.img"
  drives+=(-drive "file=$out/disk$i.img,if=virtio,format=raw,cache=writeback")
  i=$((i + 1))
done

tests=$(IFS=,; echo "$*")
budget=$(( ${#} * per + 120 ))
# Stream scenario output while the VM runs (VM_QUIET=1 to suppress).
: > "$out/results.log"
tailpid=
if [ -z "${VM_QUIET:-}" ]; then
  tail -n +1 -F "$out/results.log" 2>/dev/null | sed -u 's/^/  | /' &
  tailpid=$!
fi
set +e
timeout -s KILL "$budget" qemu-system-x86_64 \
  -accel tcg,thread=multi -smp "${VM_CPUS:-2}" -m "${VM_MEM:-1536}" \
  -kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/initramfs.cpio.gz" \
  -append "console=ttyS0,115200 panic=-1 rdinit=/init dmsnap.tests=$tests dmsnap.timeout=$per" \
  "${drives[@]}" \
  -display none -monitor none -no-reboot \
  -serial "file:$out/console.log" -serial "file:$out/results.log" </dev/null
qrc=$?
set -e
if [ -n "$tailpid" ]; then sleep 0.5; kill "$tailpid" 2>/dev/null; wait "$tailpid" 2>/dev/null || true; fi
[ "$qrc" = 0 ] || echo "vm: qemu exited with $qrc (137 = killed after ${budget}s)"
rm -f "$out"/disk*.img
python3 "$here/scripts/vm/results.py" "$out" "$@"

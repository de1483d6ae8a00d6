#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boot the test kernel in QEMU (TCG) once and run guest scenarios.
#   run.sh KDIR MODULE.ko OUTDIR SCENARIO...
# Environment: SCENARIO_TIMEOUT (seconds per scenario, default 300),
# VM_MEM (MiB, default 1536), VM_CPUS (default 2), VM_DISKS (sizes),
# VM_DISK_DIR (keep the disk images there across runs: created if missing,
# never deleted; used by crash tests), VM_KILL_AFTER (send SIGKILL to QEMU
# after this many seconds: a power cut; the verdicts then only cover what
# finished), VM_APPEND (extra kernel command-line words, which scenarios
# can read from /proc/cmdline, e.g. dmsnap.seed=42).
# KDIR is a kernel build directory, or a stock distro kernel laid out like one
# by scripts/stock/vm-kernel.sh (whose vm-base-modules the guest loads first).
# Leaves console.log, results.log and summary.json in OUTDIR and prints the
# per-scenario verdicts and KUnit results; exits non-zero on any failure.
set -euo pipefail
kdir=$1 ko=$2 out=$3; shift 3
here=$(cd "$(dirname "$0")/../.." && pwd)
per=${SCENARIO_TIMEOUT:-300}
mkdir -p "$out"
rm -f "$out"/console.log
diskdir=${VM_DISK_DIR:-$out}
[ -n "${VM_DISK_DIR:-}" ] || rm -f "$out"/disk*.img
mkdir -p "$diskdir"

"$here/scripts/vm/mkinitramfs.sh" "$out/initramfs.cpio.gz" "$kdir" "$ko"

# Sparse backing files: by default vda, vdb 512 MiB (origins), vdc, vdd
# 256 MiB (COWs). VM_DISKS overrides the sizes (and the number of disks).
drives=()
i=0
for size in ${VM_DISKS:-512M 512M 256M 256M}; do
  [ -f "$diskdir/disk$i.img" ] || truncate -s "$size" "$diskdir/disk$i.img"
  # cache=writeback: guest flushes become fdatasync() on the host, so data
  # the guest flushed survives a SIGKILL of QEMU.
  drives+=(-drive "file=$diskdir/disk$i.img,if=virtio,format=raw,cache=writeback")
  i=$((i + 1))
done

tests=$(IFS=,; echo "$*")
budget=$(( ${#} * per + 120 ))
[ -z "${VM_KILL_AFTER:-}" ] || budget=$VM_KILL_AFTER
# Stream scenario output while the VM runs (VM_QUIET=1 to suppress).
: > "$out/results.log"
tailpid=
if [ -z "${VM_QUIET:-}" ]; then
  tail -n +1 -F "$out/results.log" 2>/dev/null | sed -u 's/^/  | /' &
  tailpid=$!
fi
set +e
# RDRAND (emulated by TCG) with random.trust_cpu=on seeds the kernel's
# CRNG during early boot, before the second CPU and any user process run.
# Otherwise "crng init done" comes seconds into the scenarios, and its
# static-key flip (int3 text patching) has oopsed a process reading
# /dev/urandom at that moment under multi-threaded TCG (stock kernel,
# crash-ovf-a: "Oops: int3" in urandom_read_iter).
timeout -s KILL "$budget" qemu-system-x86_64 \
  -accel tcg,thread=multi -smp "${VM_CPUS:-2}" -m "${VM_MEM:-1536}" -cpu "${VM_CPU:-qemu64,+rdrand}" \
  -kernel "$kdir/arch/x86/boot/bzImage" -initrd "$out/initramfs.cpio.gz" \
  -append "console=ttyS0,115200 panic=-1 rdinit=/init random.trust_cpu=on dmsnap.tests=$tests dmsnap.timeout=$per ${VM_APPEND:-}" \
  "${drives[@]}" \
  -display none -monitor none -no-reboot \
  -serial "file:$out/console.log" -serial "file:$out/results.log" </dev/null
qrc=$?
set -e
if [ -n "$tailpid" ]; then sleep 0.5; kill "$tailpid" 2>/dev/null; wait "$tailpid" 2>/dev/null || true; fi
[ "$qrc" = 0 ] || echo "vm: qemu exited with $qrc (137 = killed after ${budget}s)"
[ -n "${VM_DISK_DIR:-}" ] || rm -f "$out"/disk*.img
python3 "$here/scripts/vm/results.py" "$out" "$@"

# SPDX-License-Identifier: GPL-2.0
# Crash test, the overflow cut, phase A (run by scripts/crash-test.sh as
# cut 0 of every run; not a suite scenario). Issue 17.
#
# A persistent snapshot with a tiny COW (NDATA data chunks) is filled by
# origin writes (one copy-out each) until its status says full; then one
# more origin write to a fresh chunk K overflows it: the snapshot must be
# invalidated (upstream: __invalidate_snapshot() -> persistent_drop_snapshot()
# rewrites the header, synchronously, before the origin write goes on).
# Right after that write returns, the guest prints "OVERFLOW-WRITTEN" and
# the host SIGKILLs QEMU. Phase B (crash-ovf-b.sh) must then find the
# snapshot `Invalid`: a valid snapshot would read chunk K from the origin,
# which now holds the new data.
#
# To make the cut deterministic, the COW sits on dm-delay and, for the
# overflowing write only, every write to it is delayed DELAY ms (default
# 4000): a header written synchronously before the origin write completes
# is on the disk image when the host sees the marker; a header written
# afterwards (by a worker) is still queued in dm-delay, inside the guest,
# when QEMU dies, and is lost like any queued I/O.
#
# Notes for phase B go O_DIRECT|O_DSYNC to /dev/vdd, byte 0:
#   "OVFNOTE impl= chunk= osz= cowsec= k= sum= ksum= newsum=" with sum the
#   md5 of the snapshot image before the overflow, ksum the md5 of chunk K
#   before it (what a valid snapshot must read there), newsum the md5 of the
#   overflowing write's data.
# Disks: origin /dev/vda 0..OSZ, COW /dev/vdc 0..COWSEC sectors.
. /tests/lib.sh
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
IMPL=$(arg dmsnap.impl); IMPL=${IMPL:-rs}
DELAY=$(arg dmsnap.ovfdelay); DELAY=${DELAY:-4000}
CHUNK=8; CB=4096                   # chunk: 8 sectors = 4 KiB
OSZ=4194304; OSEC=$((OSZ / 512))
NDATA=6                            # data chunks in the COW
COWSEC=$(( (NDATA + 2) * CHUNK ))  # + the header and one metadata area
note() {  # note TEXT OFFSET: a durable 512-byte record on the notes disk
  { printf '%s\n' "$1"; head -c 511 /dev/zero; } | head -c 512 > /tmp/note
  $DD if=/tmp/note of=/dev/vdd bs=512 seek=$(($2 / 512)) oflag=direct,dsync conv=notrunc 2>/dev/null || fail "note"
}
up() { cut -d' ' -f1 /proc/uptime; }

load_module "$IMPL"
grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
echo "OVF setup impl=$IMPL chunk=$CHUNK cowsec=$COWSEC delay=${DELAY}ms $(up)"
head -c $OSZ /dev/urandom | $DD of=/dev/vda bs=1M iflag=fullblock oflag=direct conv=fsync 2>/dev/null || fail fill
wipe_cow /dev/vdc
dmsetup create ovf-real --table "0 $OSEC linear /dev/vda 0"
dmsetup create ovf-cow --table "0 $COWSEC linear /dev/vdc 0"
dmsetup create ovf-snap --table "0 $OSEC snapshot /dev/mapper/ovf-real /dev/mapper/ovf-cow P $CHUNK"
dmsetup create ovf --table "0 $OSEC snapshot-origin /dev/mapper/ovf-real"
SSUM=$(sum_dev /dev/mapper/ovf-snap)

# Fill the COW: first writes to chunks 1, 3, 5, ... until the status says
# used == total (every chunk of the COW allocated).
full() { set -- $(dmsetup status ovf-snap); [ "${4%%/*}" = "${4##*/}" ]; }
c=1 n=0
while ! full; do
  [ $n -lt $((NDATA + 4)) ] || fail "the COW is not full after $n copy-outs: $(dmsetup status ovf-snap)"
  head -c $CB /dev/urandom > /tmp/w
  write_at /dev/mapper/ovf $((c * CB)) /tmp/w
  c=$((c + 2)) n=$((n + 1))
done
info "COW full after $n copy-outs: $(dmsetup status ovf-snap)"
K=$((c + 8))
head -c $CB /dev/urandom > /tmp/new
KSUM=$(sum_at /dev/mapper/ovf-snap $((K * CB)) $CB)
note "OVFNOTE impl=$IMPL chunk=$CHUNK osz=$OSZ cowsec=$COWSEC k=$K sum=$SSUM ksum=$KSUM newsum=$(sum_file /tmp/new)" 0

# From here every write to the COW waits DELAY ms inside the guest.
dmsetup load ovf-cow --table "0 $COWSEC delay /dev/vdc 0 0 /dev/vdc 0 $DELAY"
dmsetup suspend ovf-cow; dmsetup resume ovf-cow
t0=$(up)
echo "OVF writing chunk $K $t0"
$DD if=/tmp/new of=/dev/mapper/ovf bs=$CB seek=$K oflag=direct conv=notrunc 2>/dev/null || fail "the overflowing write failed"
echo "OVERFLOW-WRITTEN chunk $K, the write took $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }') s"
# The host kills QEMU now. If it does not, say so (phase B still checks).
sleep 60
fail "not killed within 60 s of the overflowing write"

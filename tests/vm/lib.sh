# SPDX-License-Identifier: GPL-2.0
# Helpers sourced by the guest scenario scripts (run with sh -e).
#
# Disks: /dev/vda../dev/vdd are sparse files on the host (see
# scripts/vm/run.sh for sizes: 512M, 512M, 256M, 256M by default). Module files live in /modules.

# coreutils dd (see scripts/vm/mkinitramfs.sh): use $DD for device I/O.
DD=/usr/bin/coreutils-dd
# Checksums compare data against a model, so speed matters more than
# strength: coreutils md5sum runs ~60 MB/s under TCG, busybox sha256 ~10.
SUM=/usr/bin/coreutils-md5sum
RS=dm_snapshot_rs
UPSTREAM=dm_snapshot

fail() { echo "FAIL: $*"; exit 1; }
info() { echo "-- $*"; }

# load_module rs|upstream [PARAM=VALUE...]: load one implementation of the
# snapshot targets. Both register the same target names, so the other one is
# unloaded first.
load_module() {
  local which=$1; shift
  unload_modules
  grep -q '^dm_bufio ' /proc/modules || insmod /modules/dm-bufio.ko
  case "$which" in
    rs) insmod /modules/dm-snapshot-rs.ko "$@" ;;
    upstream) insmod /modules/dm-snapshot.ko "$@" ;;
    *) fail "unknown module $1" ;;
  esac
}

unload_modules() {
  for m in $RS $UPSTREAM; do
    if grep -q "^$m " /proc/modules; then rmmod "$m" || fail "rmmod $m"; fi
  done
}

# sectors DEV: size in 512-byte sectors.
sectors() { blockdev --getsz "$1"; }

# devno DEV: "major:minor" as dm prints it.
devno() {
  local d; d=$(stat -L -c '%t:%T' "$1")
  printf '%d:%d' "0x${d%%:*}" "0x${d##*:}"
}

# expect_eq WHAT GOT WANT
expect_eq() {
  [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

# Deterministic pseudo-random data: pattern SEED BYTES > file.
pattern() {
  local seed=$1 bytes=$2
  # Repeat a seeded block; seeds differ per call so blocks differ per write.
  awk -v s="$seed" -v n="$bytes" 'BEGIN {
    srand(s); line = "";
    for (i = 0; i < 64; i++) line = line sprintf("%c", 65 + int(rand() * 26));
    out = 0;
    while (out + 64 <= n) { printf "%s", line; out += 64; line = substr(line, 2) substr(line, 1, 1) }
    if (out < n) printf "%s", substr(line, 1, n - out);
  }'
}

# All device I/O in the helpers is O_DIRECT: a buffered read of a lower
# device could return page-cache contents that predate writes made through
# a dm device stacked on it (the boot-time partition scan caches sector 0).

# write_at DEV OFFSET_BYTES FILE: write FILE (a multiple of 512 bytes) at a
# 512-aligned byte offset.
write_at() {
  $DD if="$3" of="$1" bs=256K seek="$2" iflag=fullblock oflag=direct,seek_bytes conv=notrunc 2>/dev/null \
    || fail "write to $1 at $2"
}

# read_at DEV OFFSET_BYTES LEN_BYTES: write the bytes to stdout.
read_at() {
  $DD if="$1" bs=256K skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes 2>/dev/null \
    || fail "read from $1 at $2"
}

sum_at() { read_at "$@" | $SUM | cut -d' ' -f1; }
sum_file() { $SUM < "$1" | cut -d' ' -f1; }
sum_dev() { $DD if="$1" bs=1M iflag=direct 2>/dev/null | $SUM | cut -d' ' -f1; }

# dmsetup must fail to create NAME with TABLE, and the kernel log must name
# the reason.
expect_ctr_fail() {
  local name=$1 table=$2 msg=$3
  dmesg -c >/dev/null
  if dmsetup create "$name" --table "$table" 2>/dev/null; then
    dmsetup remove "$name"
    fail "table '$table' was accepted"
  fi
  dmesg | grep -q "$msg" || { dmesg | tail -5; fail "no '$msg' in the kernel log for '$table'"; }
  dmsetup remove "$name" 2>/dev/null || true
}

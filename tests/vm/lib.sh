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
  local mod
  for mod in $RS $UPSTREAM; do
    if grep -q "^$mod " /proc/modules; then rmmod "$mod" || fail "rmmod $mod"; fi
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

# ---- Helpers for the snapshot scenarios (snap-*.sh, lvm-*.sh) ----

# modules_with_target TARGET: the implementations ("upstream", then "rs")
# that register TARGET, found by loading each in turn. Nothing stays loaded.
modules_with_target() {
  # (not "m": unload_modules assigns a global m)
  local impl list=
  for impl in upstream rs; do
    if load_module "$impl" 2>/dev/null; then
      dmsetup targets | grep -q "^$1 " && list="$list $impl"
    fi
    unload_modules
  done
  echo ${list# }
}

# compare_modules "MODULES" NAME...: when MODULES holds both implementations,
# /tmp/upstream.NAME and /tmp/rs.NAME must be identical for every NAME.
compare_modules() {
  local mods=" $1 " f; shift
  case "$mods" in *" upstream "*" rs "*) ;;
    *) info "differential compare skipped: only '$1' ran"; return 0 ;;
  esac
  for f in "$@"; do
    cmp /tmp/upstream.$f /tmp/rs.$f >/dev/null || {
      diff /tmp/upstream.$f /tmp/rs.$f || true
      fail "/tmp/upstream.$f and /tmp/rs.$f differ"
    }
  done
  info "upstream and rs recorded identical: $*"
}

# gen SEED BYTES > FILE: deterministic data (SEED numeric), every 512-byte
# sector different: it starts with "SEED:SECTOR:" and continues with a
# seeded random line rotated by the sector number. A misplaced sector,
# chunk or write shows up in any checksum that covers it.
gen() {
  awk -v s="$1" -v n="$2" 'BEGIN {
    srand(s + 0); base = "";
    for (i = 0; i < 512; i++) base = base sprintf("%c", 33 + int(rand() * 94));
    base = base base;
    for (k = 0; k * 512 < n; k++) {
      h = sprintf("%d:%d:", s, k);
      sec = h substr(base, 1 + (k * 37) % 512, 512 - length(h));
      if ((k + 1) * 512 > n) sec = substr(sec, 1, n - k * 512);
      printf "%s", sec;
    }
  }'
}

# zeros BYTES > FILE
zeros() { head -c "$1" /dev/zero; }

# patch_file FILE OFFSET_BYTES SRC: overwrite FILE at OFFSET with SRC (the
# model side of a device write; no device involved).
patch_file() {
  $DD if="$3" of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc 2>/dev/null \
    || fail "patch $1 at $2"
}

# read_fails DEV OFFSET_BYTES LEN_BYTES: true if an O_DIRECT read fails.
read_fails() {
  ! $DD if="$1" of=/dev/null bs=4K skip="$2" count="$3" \
      iflag=direct,skip_bytes,count_bytes 2>/dev/null
}

# write_fails DEV OFFSET_BYTES FILE: true if an O_DIRECT write fails.
write_fails() {
  ! $DD if="$3" of="$1" bs=256K seek="$2" iflag=fullblock \
      oflag=direct,seek_bytes conv=notrunc 2>/dev/null
}

# dm_events NAME: the device's event counter.
dm_events() { dmsetup info -c --noheadings -o events "$1" | tr -d ' '; }

# record FILE LABEL TEXT: append "LABEL: TEXT" to /tmp/FILE (and echo it).
record() { echo "$2: $3" | tee -a "/tmp/$1"; }

# wipe_cow DEV: zero the first 4 KiB, as lvcreate does for a new COW.
wipe_cow() {
  $DD if=/dev/zero of="$1" bs=4096 count=1 oflag=direct conv=notrunc 2>/dev/null \
    || fail "wipe $1"
}

# Window models. A scenario sets WINDOWS="start:len ..." (bytes, disjoint):
# the regions it reads and writes. /tmp/PREFIX.I holds what a device should
# read in window I; the files are built from generated data only.

# model_fill DEV PREFIX SEED: write fresh data to every window of DEV and
# make it the model PREFIX.
model_fill() {
  local i=0 w
  for w in $WINDOWS; do
    gen $(($3 + i)) ${w#*:} > /tmp/$2.$i
    write_at "$1" ${w%:*} /tmp/$2.$i
    i=$((i + 1))
  done
}

# model_copy FROM TO: model TO := model FROM (e.g. at snapshot creation).
model_copy() {
  local i=0 w
  for w in $WINDOWS; do cp /tmp/$1.$i /tmp/$2.$i; i=$((i + 1)); done
}

# mwrite DEV PREFIX OFF LEN SEED: write generated data to DEV at OFF and
# apply the same write to model PREFIX. The write must lie in one window.
mwrite() {
  local i=0 w s l
  for w in $WINDOWS; do
    s=${w%:*} l=${w#*:}
    if [ "$3" -ge "$s" ] && [ $(($3 + $4)) -le $((s + l)) ]; then
      gen "$5" "$4" > /tmp/mwrite.data
      write_at "$1" "$3" /tmp/mwrite.data
      patch_file /tmp/$2.$i $(($3 - s)) /tmp/mwrite.data
      return 0
    fi
    i=$((i + 1))
  done
  fail "no window holds $3+$4"
}

# model_check LABEL DEV PREFIX [SUMSFILE]: every window of DEV reads as
# model PREFIX; the checksums are appended to /tmp/SUMSFILE if given.
model_check() {
  local i=0 w want
  for w in $WINDOWS; do
    want=$(sum_file /tmp/$3.$i)
    expect_eq "$1: $2 window $i (${w%:*}+${w#*:})" "$(sum_at "$2" ${w%:*} ${w#*:})" "$want"
    [ -z "$4" ] || echo "$1 $3 $i $want" >> /tmp/$4
    i=$((i + 1))
  done
}

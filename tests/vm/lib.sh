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

# Deterministic pseudo-random data: pattern SEED BYTES > file. SEED may be
# any word; different seeds give different data, and every 512-byte sector
# starts with "SEED:index:", so data written at a wrong offset is caught.
pattern() {
  awk -v s="$1" -v n="$2" 'BEGIN {
    # Hash the seed word into a number (awk has no ord(): index a charset).
    cs = " !\"#$%&\047()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    h = 7;
    for (i = 1; i <= length(s); i++) h = (h * 131 + index(cs, substr(s, i, 1))) % 2147483647;
    srand(h); base = "";
    for (i = 0; i < 512; i++) base = base sprintf("%c", 33 + int(rand() * 94));
    base = base base;
    for (k = 0; k * 512 < n; k++) {
      hd = sprintf("%s:%d:", s, k);
      sec = hd substr(base, 1 + (k * 37) % 512, 512 - length(hd));
      if ((k + 1) * 512 > n) sec = substr(sec, 1, n - k * 512);
      printf "%s", sec;
    }
  }'
}

# All device I/O in the helpers is O_DIRECT: a buffered read of a lower
# device could return page-cache contents that predate writes made through
# a dm device stacked on it (the boot-time partition scan caches sector 0).

# write_at DEV OFFSET_BYTES FILE: write FILE (a multiple of 512 bytes) at a
# 512-aligned byte offset. The block size divides the file's size: coreutils
# dd turns O_DIRECT off for a write shorter than bs, which would make a
# short write a page-cache read-modify-write.
write_at() {
  $DD if="$3" of="$1" bs=$(direct_bs "$3") seek="$2" iflag=fullblock oflag=direct,seek_bytes conv=notrunc 2>/dev/null \
    || fail "write to $1 at $2"
}

# direct_bs FILE: the largest of 256K, 64K, 4K and 512 that divides FILE's size.
direct_bs() {
  local n b; n=$(stat -c %s "$1")
  for b in 262144 65536 4096 512; do
    [ $((n % b)) != 0 ] || { echo $b; return; }
  done
  echo 512
}

# read_at DEV OFFSET_BYTES LEN_BYTES: write the bytes to stdout.
read_at() {
  $DD if="$1" bs=256K skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes 2>/dev/null \
    || fail "read from $1 at $2"
}

sum_at() { read_at "$@" | $SUM | cut -d' ' -f1; }

# fill_mib DEV SEED MIB: fill the first MIB MiB of DEV with one 1 MiB
# pattern (SEED) repeated.
fill_mib() {
  local i=0
  pattern "$2" 1048576 > /tmp/fill.$2
  while [ $i -lt "$3" ]; do write_at "$1" $(( i * 1048576 )) /tmp/fill.$2; i=$((i + 1)); done
}
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
# upstream_discard_oops: true on kernels where upstream's module oopses as
# soon as a discard_zeroes_cow snapshot table loads. Its io_hints sets
# discard_granularity to the chunk size in sectors (the field is in bytes);
# since 7.x, blk_stack_limits() divides by discard_granularity >> 9, which
# is 0 for chunks under 256 KiB: a divide error inside table_load, which
# then holds dm's locks forever. On those kernels the differential
# scenarios load discard_zeroes_cow tables with this module only, and check
# them against their models and expected lines instead.
upstream_discard_oops() {
  [ "$(uname -r | cut -d. -f1)" -ge 7 ]
}

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

# has_both "MODULES": true if MODULES lists both implementations.
has_both() {
  case " $1 " in *" upstream "*) ;; *) return 1 ;; esac
  case " $1 " in *" rs "*) return 0 ;; *) return 1 ;; esac
}

# compare_modules "MODULES" NAME...: when MODULES holds both implementations,
# /tmp/upstream.NAME and /tmp/rs.NAME must be identical for every NAME.
compare_modules() {
  local mods="$1" f; shift
  if ! has_both "$mods"; then
    info "differential compare skipped: only '$mods' ran"; return 0
  fi
  for f in "$@"; do
    cmp /tmp/upstream.$f /tmp/rs.$f >/dev/null || {
      diff /tmp/upstream.$f /tmp/rs.$f || true
      fail "/tmp/upstream.$f and /tmp/rs.$f differ"
    }
  done
  info "upstream and rs recorded identical: $*"
}

# gen SEED BYTES > FILE: the same generator as pattern (SEED usually a
# number): every 512-byte sector starts with "SEED:SECTOR:", so a misplaced
# sector, chunk or write shows up in any checksum that covers it.
gen() { pattern "$1" "$2"; }

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
  ! $DD if="$3" of="$1" bs=$(direct_bs "$3") seek="$2" iflag=fullblock \
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

# ---- Crash-consistency helpers (merge-logwrites.sh, tests/crash/*.sh) ----

# wait_merged NAME [SECONDS]: poll a snapshot-merge device until its status
# says used == metadata (everything merged); fail after SECONDS (default 120)
# or if the status is not a merge status line.
wait_merged() {
  local dev=$1 n=0 lim=$(( ${2:-120} * 10 )) st used meta
  while :; do
    st=$(dmsetup status "$dev") || fail "status of $dev"
    set -- $st
    [ "$3" = snapshot-merge ] || fail "$dev: not a snapshot-merge status: $st"
    case "$4" in */*) ;; *) fail "$dev: merge status '$st'" ;; esac
    used=${4%%/*}; meta=$5
    [ "$used" = "$meta" ] && return 0
    n=$((n + 1)); [ $n -lt $lim ] || fail "$dev: merge did not finish: $st"
    sleep 0.1
  done
}

# A "stamped" write load: write number S (1, 2, ...) writes stamp S (4 KiB
# of gen data seeded by S) to block load_block S of a load region of NB
# 4 KiB blocks. The writes are issued one at a time, so when the acks of
# writes 1..A are known, only write A+1 can be in flight.
stamp() { gen $((700000 + $1)) 4096; }
load_block() { echo $(( ($1 * $1 * 7 + $1 * 13 + $3) % $2 )); }

# load_model BASE NB SALT FROM TO: apply writes FROM..TO to the region image
# file BASE (in place).
load_model() {
  local s=$4
  while [ "$s" -le "$5" ]; do
    [ -f /tmp/stamp.$s ] || stamp $s > /tmp/stamp.$s
    patch_file "$1" $(( $(load_block $s $2 $3) * 4096 )) /tmp/stamp.$s
    s=$((s + 1))
  done
}

# check_after_load LABEL DEV SIZE RSTART RLEN SFILE SUM A MAXA NB SALT: DEV
# (SIZE bytes) must read as the image with checksum SUM outside the load
# region [RSTART, RSTART+RLEN), whose content there is SFILE (what the
# region held before the load). Inside it, DEV must read as SFILE with load
# writes 1..A applied, or, if A < MAXA (write A+1 was issued and may have
# been in flight), 1..A+1. Prints which.
check_after_load() {
  local label=$1 dev=$2 size=$3 rs=$4 rl=$5 sfile=$6 want=$7 a=$8 maxa=$9 nb=${10} salt=${11} got r
  got=$( { read_at "$dev" 0 "$rs"; cat "$sfile"; read_at "$dev" $((rs + rl)) $((size - rs - rl)); } | $SUM | cut -d' ' -f1)
  expect_eq "$label: $dev outside the load region" "$got" "$want"
  # /tmp/cal.acc caches SFILE with writes 1..$(cat /tmp/cal.n) applied.
  if [ "$(cat /tmp/cal.src 2>/dev/null)" != "$sfile $nb $salt" ] || [ "$(cat /tmp/cal.n)" -gt "$a" ]; then
    cp "$sfile" /tmp/cal.acc; echo 0 > /tmp/cal.n; echo "$sfile $nb $salt" > /tmp/cal.src
  fi
  load_model /tmp/cal.acc "$nb" "$salt" $(( $(cat /tmp/cal.n) + 1 )) "$a"
  echo "$a" > /tmp/cal.n
  cp /tmp/cal.acc /tmp/cal.model
  r=$(sum_at "$dev" "$rs" "$rl")
  if [ "$r" = "$(sum_file /tmp/cal.model)" ]; then
    echo "$label: load region = writes 1..$a"; return 0
  fi
  [ "$a" -lt "$maxa" ] || fail "$label: $dev load region is not writes 1..$a"
  load_model /tmp/cal.model "$nb" "$salt" $((a + 1)) $((a + 1))
  if [ "$r" = "$(sum_file /tmp/cal.model)" ]; then
    echo "$label: load region = writes 1..$((a + 1)) (the in-flight one landed)"; return 0
  fi
  fail "$label: $dev load region matches neither writes 1..$a nor 1..$((a + 1))"
}

# An LVM root volume for the rollback scenarios (lvm-merge, dkms-modprobe):
# LVM_ROOT_CFG limits LVM to /dev/vda and /dev/vdc; lvm_root_setup NCONF
# NLIB makes vg/root (96 MiB, ext4) with NCONF config files and NLIB
# libraries of known patterns and leaves their sums in /tmp/before;
# lvm_root_sum prints one "sum path" line per file of the mounted root.
LVM_ROOT_CFG='devices { filter = [ "a|^/dev/vd[ac]$|", "r|.*|" ] obtain_device_list_from_udev = 0 } activation { polling_interval = 1 }'
lvmc() { "$@" --config "$LVM_ROOT_CFG"; }
lvm_root_sum() { ( cd /mnt/root && find . -type f | sort | while read -r f; do echo "$(sum_file "$f") $f"; done ) ; }
# lvm_root_check LABEL: vg/root's files equal /tmp/before, fsck finds no
# error and the snapshot vg/pre* is gone.
lvm_root_check() {
  mount /dev/vg/root /mnt/root
  lvm_root_sum > /tmp/now
  umount /mnt/root
  cmp /tmp/before /tmp/now || { diff /tmp/before /tmp/now; fail "$1: files differ from the snapshot"; }
  e2fsck -fn /dev/vg/root >/dev/null || fail "$1: fsck errors"
  if lvmc lvs --noheadings -o lv_name vg | grep -q pre; then fail "$1: snapshot still there"; fi
}
lvm_root_setup() {
  local d i
  for d in /dev/vda /dev/vdc; do $DD if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null; done
  lvmc pvcreate -y -ff /dev/vda /dev/vdc >/dev/null
  lvmc vgcreate vg /dev/vda /dev/vdc >/dev/null
  lvmc lvcreate -y -L 96M -n root vg /dev/vda >/dev/null
  mkfs.ext4 -q -F /dev/vg/root
  mkdir -p /mnt/root
  mount /dev/vg/root /mnt/root
  mkdir -p /mnt/root/etc /mnt/root/usr/lib
  for i in $(seq 1 "$1"); do pattern "cfg$i" $(( i * 4096 )) > /mnt/root/etc/conf$i; done
  for i in $(seq 1 "$2"); do pattern "lib$i" $(( i * 1048576 )) > /mnt/root/usr/lib/lib$i.so; done
  sync
  lvm_root_sum > /tmp/before
  umount /mnt/root
}

# SPDX-License-Identifier: GPL-2.0
# Rules around a running merge (Rust module): a second snapshot-merge on the
# origin is refused; a new snapshot (fresh COW) is refused while merging,
# but an existing one can still be activated and stays stable; resuming a
# snapshot-merge while a snapshot-origin of the origin is live on another
# device is refused. A nearly full COW merges completely.
. /tests/lib.sh
SZ=65536
load_module rs
for i in 0 1 2; do $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$(( i * 4096 )) oflag=direct 2>/dev/null; done
dmsetup create real --table "0 $SZ linear /dev/vda 0"
fill_mib /dev/mapper/real base 32
# cow0: 1 MiB for 4K chunks = 256 chunks, nearly filled below.
dmsetup create cow0 --table "0 2048 linear /dev/vdc 0"
dmsetup create cow1 --table "0 32768 linear /dev/vdc 32768"
dmsetup create cow2 --table "0 32768 linear /dev/vdc 65536"
dmsetup create s0 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow0 P 8"
dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow1 P 8"
dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
# 250 chunks: the COW (header, area, 254 data chunks) is 98% full.
pattern fillup 1024000 > /tmp/u
write_at /dev/mapper/origin 0 /tmp/u
set -- $(dmsetup status s0)
info "s0 before merge: $4 $5"
s0sum=$(sum_at /dev/mapper/s0 0 $(( SZ * 512 )))
s1sum=$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))
# s1 goes away for now (deactivated, its COW stays).
dmsetup remove s1

# A snapshot-origin of the same origin live on another device.
dmsetup create other --table "0 $SZ snapshot-origin /dev/mapper/real"
dmsetup suspend origin; dmsetup suspend s0
dmsetup load origin --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow0 P 8"
dmsetup load s0 --table "0 $SZ error"
if dmsetup resume origin 2>/dev/null; then fail "merge resumed with a live snapshot-origin elsewhere"; fi
dmsetup remove other
# Throttled, so the merge is still running for the checks below.
echo 1 > /sys/module/$RS/parameters/snapshot_copy_throttle
dmsetup resume origin; dmsetup resume s0
dmsetup table origin | grep -q snapshot-merge || fail "merge did not start"

# A second snapshot-merge on the same origin.
if dmsetup create m2 --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow2 P 8" 2>/dev/null; then
  fail "second merging snapshot accepted"
fi
dmsetup remove m2 2>/dev/null || true
# A new snapshot while merging.
$DD if=/dev/zero of=/dev/mapper/cow2 bs=4096 count=1 oflag=direct 2>/dev/null
if dmsetup create s2 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow2 P 8" 2>/dev/null; then
  fail "new snapshot accepted during a merge"
fi
dmsetup remove s2 2>/dev/null || true
# An existing snapshot may be activated and stays stable.
dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow1 P 8"
echo 100 > /sys/module/$RS/parameters/snapshot_copy_throttle
wait_merged origin
expect_eq "nearly full COW merged" "$(sum_at /dev/mapper/origin 0 $(( SZ * 512 )))" "$s0sum"
expect_eq "existing snapshot stable" "$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))" "$s1sum"
for d in s1 origin s0 cow0 cow1 cow2 real; do dmsetup remove $d; done
unload_modules

# SPDX-License-Identifier: GPL-2.0
# Smoke test of a guest kernel with the upstream module only (no rs): made
# for a distro kernel (scripts/stock/vm-kernel.sh), where our module may not
# exist yet, but runs on any kernel. modprobe resolves dm-snapshot in the
# guest's module tree (if there is one); then, with the upstream module: a
# snapshot keeps the origin's old data across origin writes, snapshot writes
# stay private, and a snapshot-merge (LVM's table sequence) rolls the origin
# back to the snapshot image. Data is checked with checksums throughout.
. /tests/lib.sh
info "kernel $(uname -r), tainted=$(cat /proc/sys/kernel/tainted)"

# modprobe: only where the guest has a depmod'ed tree for this kernel.
if [ -f "/lib/modules/$(uname -r)/modules.dep" ]; then
  unload_modules
  grep -q '^dm_bufio ' /proc/modules && rmmod dm_bufio
  modprobe dm-snapshot || fail "modprobe dm-snapshot"
  grep -q "^$UPSTREAM " /proc/modules || fail "modprobe dm-snapshot loaded no $UPSTREAM"
  grep -q '^dm_bufio ' /proc/modules || fail "modprobe dm-snapshot did not pull in dm_bufio"
  dmsetup targets | grep -q '^snapshot-merge ' || fail "no snapshot-merge target after modprobe"
  # (not modprobe -r: it would take the unused dm_mod with it)
  rmmod "$UPSTREAM" || fail "rmmod $UPSTREAM"
  info "modprobe dm-snapshot: ok"
else
  info "no /lib/modules/$(uname -r)/modules.dep: modprobe not tried"
fi

load_module upstream
dmsetup targets | grep -q '^snapshot ' || fail "no snapshot target"
wipe_cow /dev/vdc
size=65536   # 32 MiB
bytes=$((size * 512))
dmsetup create base-real --table "0 $size linear /dev/vda 0"
fill_mib /dev/mapper/base-real orig 32
origsum=$(sum_at /dev/mapper/base-real 0 $bytes)
dmsetup create base-cow --table "0 65536 linear /dev/vdc 0"
dmsetup create snap --table "0 $size snapshot /dev/mapper/base-real /dev/mapper/base-cow P 8"
dmsetup create base --table "0 $size snapshot-origin /dev/mapper/base-real"
expect_eq "snapshot of a fresh origin" "$(sum_at /dev/mapper/snap 0 $bytes)" "$origsum"

# Origin writes (aligned, partial chunk, across a chunk boundary): the
# snapshot keeps the old data.
pattern upgrade 262144 > /tmp/u
for off in 0 3145728 16777216 30408704; do write_at /dev/mapper/base $off /tmp/u; done
pattern part 1024 > /tmp/p; write_at /dev/mapper/base 8192 /tmp/p
pattern cross 8192 > /tmp/x; write_at /dev/mapper/base 1046528 /tmp/x
expect_eq "snapshot keeps the old data" "$(sum_at /dev/mapper/snap 0 $bytes)" "$origsum"
expect_eq "origin reads the new data" "$(sum_at /dev/mapper/base 16777216 262144)" "$(sum_file /tmp/u)"
expect_eq "origin partial write" "$(sum_at /dev/mapper/base 8192 1024)" "$(sum_file /tmp/p)"
expect_eq "origin cross-chunk write" "$(sum_at /dev/mapper/base 1046528 8192)" "$(sum_file /tmp/x)"
newsum=$(sum_at /dev/mapper/base 0 $bytes)

# A snapshot write stays in the snapshot.
pattern snapw 65536 > /tmp/w; write_at /dev/mapper/snap 20971520 /tmp/w
expect_eq "snapshot write visible" "$(sum_at /dev/mapper/snap 20971520 65536)" "$(sum_file /tmp/w)"
expect_eq "origin unchanged by the snapshot write" "$(sum_at /dev/mapper/base 0 $bytes)" "$newsum"
snapsum=$(sum_at /dev/mapper/snap 0 $bytes)
dmsetup status snap

# Merge, as lvconvert --merge does it.
dmsetup suspend base; dmsetup suspend snap
dmsetup load base --table "0 $size snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P 8"
dmsetup load snap --table "0 $size error"
dmsetup resume base
dmsetup resume snap
wait_merged base 300
dmsetup status base
expect_eq "origin equals the snapshot image after the merge" "$(sum_at /dev/mapper/base 0 $bytes)" "$snapsum"
expect_eq "real device equals the snapshot image" "$(sum_at /dev/mapper/base-real 0 $bytes)" "$snapsum"
dmsetup suspend base
dmsetup load base --table "0 $size linear /dev/mapper/base-real 0"
dmsetup resume base
expect_eq "after the merge target is gone" "$(sum_at /dev/mapper/base 0 $bytes)" "$snapsum"
dmsetup remove base; dmsetup remove snap; dmsetup remove base-cow; dmsetup remove base-real
unload_modules
info "tainted=$(cat /proc/sys/kernel/tainted)"

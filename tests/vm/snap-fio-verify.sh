# SPDX-License-Identifier: GPL-2.0
# fio: a crc32c-verified image is written to the origin and three snapshots
# are taken: two of 4K chunks (so concurrent small copies have two
# destinations) and one of 16K chunks. Random origin writes at queue depth
# 16 then run while fio verifies the first snapshot concurrently; every
# snapshot is verified afterwards, again after it is reactivated from its
# COW, and the origin writes verify themselves. Negative control: a
# corrupted snapshot block fails verification. Then all of it again with
# snapshot_cow_threshold=0.
. /tests/lib.sh
SIZE=131072             # 64 MiB origin; fio uses the first 32 MiB
FILL="--name=img --rw=write --bs=64k --size=32m --direct=1 --ioengine=psync --verify=crc32c --randseed=7"
# snapshot name, COW device, chunk sectors
SNAPS="snap:/dev/vdc:8 snap2:/dev/mapper/cow2:8 snap3:/dev/mapper/cow3:32"

verify_snap() {  # $1 = snapshot, $2 = output file, further args override
  local dev=/dev/mapper/$1 out=$2; shift 2
  fio $FILL --filename=$dev --verify_only --do_verify=1 "$@" --output=$out >/dev/null
}

verify_all() {  # $1 = label
  local s n
  for s in $SNAPS; do
    n=${s%%:*}
    verify_snap $n /tmp/v.$n.out || { cat /tmp/v.$n.out; fail "$1: $n verification"; }
    record $M.fio "$1: $n status" "$(dmsetup status $n)"
  done
}

run_case() {
  M=$1
  : > /tmp/$M.fio
  load_module "$M" ${PARAMS:-}
  if [ -n "${PARAMS:-}" ]; then
    mod=$RS; [ "$M" = upstream ] && mod=$UPSTREAM
    expect_eq "$M threshold" "$(cat /sys/module/$mod/parameters/snapshot_cow_threshold)" 0
  fi
  wipe_cow /dev/vdc
  dmsetup create cow2 --table "0 262144 linear /dev/vdd 0"
  dmsetup create cow3 --table "0 262144 linear /dev/vdd 262144"
  wipe_cow /dev/mapper/cow2; wipe_cow /dev/mapper/cow3
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  fio $FILL --filename=/dev/mapper/base-real --do_verify=0 --output=/tmp/fill.out >/dev/null \
    || { cat /tmp/fill.out; fail "fill"; }
  for s in $SNAPS; do
    set -- $(echo "$s" | tr : ' '); n=$1 cow=$2 chunk=$3
    dmsetup create $n --table "0 $SIZE snapshot /dev/mapper/base-real $cow P $chunk"
  done
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"

  info "$M: randwrite (qd 16) on the origin while verifying a snapshot"
  fio --name=ow --filename=/dev/mapper/base --rw=randwrite --bs=4k --size=32m --io_size=6m \
      --direct=1 --ioengine=libaio --iodepth=16 --verify=crc32c --do_verify=1 --randseed=11 \
      --output=/tmp/ow.out >/dev/null &
  owpid=$!
  verify_snap snap /tmp/vs.out || { cat /tmp/vs.out; fail "snapshot verification during origin writes"; }
  wait $owpid || { cat /tmp/ow.out; fail "origin randwrite verification"; }

  info "$M: verify every snapshot again"
  verify_all "after randwrite"

  info "$M: reactivate the snapshots from their COWs and verify them"
  dmsetup remove base
  for s in $SNAPS; do
    set -- $(echo "$s" | tr : ' '); n=$1 cow=$2 chunk=$3
    dmsetup remove $n
    dmsetup create $n --table "0 $SIZE snapshot /dev/mapper/base-real $cow P $chunk"
  done
  verify_all "reactivated"

  info "$M: negative control: corrupt one snapshot block"
  zeros 4096 > /tmp/z
  write_at /dev/mapper/snap $((512 << 10)) /tmp/z
  if verify_snap snap /tmp/vs3.out --size=1m; then cat /tmp/vs3.out; fail "corruption not detected"; fi
  record $M.fio "corruption detected" yes
  for s in $SNAPS; do dmsetup remove ${s%%:*}; done
  dmsetup remove base-real; dmsetup remove cow2; dmsetup remove cow3
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" fio
# snapshot_cow_threshold=0: a write that needs a copy waits until no copy
# is in flight (upstream's "in_progress > threshold"), so the copies of
# the concurrent origin writes go one at a time; the data must be the same.
info "again with snapshot_cow_threshold=0"
for impl in $mods; do PARAMS=snapshot_cow_threshold=0 run_case $impl; done
compare_modules "$mods" fio

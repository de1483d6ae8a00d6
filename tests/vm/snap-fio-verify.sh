# SPDX-License-Identifier: GPL-2.0
# fio: a crc32c-verified image is written to the origin, a snapshot taken,
# then random origin writes run while fio verifies the snapshot concurrently;
# the snapshot is verified again afterwards and the origin writes verify
# themselves. Negative control: a corrupted snapshot block fails verification.
. /tests/lib.sh
SIZE=131072             # 64 MiB origin; fio uses the first 32 MiB
FILL="--name=img --rw=write --bs=64k --size=32m --direct=1 --ioengine=psync --verify=crc32c --randseed=7"

verify_snap() {  # $1 = output file, further args override
  local out=$1; shift
  fio $FILL --filename=/dev/mapper/snap --verify_only --do_verify=1 "$@" --output=$out >/dev/null
}

run_case() {
  M=$1
  : > /tmp/$M.fio
  load_module "$M"
  wipe_cow /dev/vdc
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  fio $FILL --filename=/dev/mapper/base-real --do_verify=0 --output=/tmp/fill.out >/dev/null \
    || { cat /tmp/fill.out; fail "fill"; }
  dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real /dev/vdc P 8"
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"

  info "$M: randwrite on the origin while verifying the snapshot"
  fio --name=ow --filename=/dev/mapper/base --rw=randwrite --bs=4k --size=32m --io_size=6m \
      --direct=1 --ioengine=psync --verify=crc32c --do_verify=1 --randseed=11 \
      --output=/tmp/ow.out >/dev/null &
  owpid=$!
  verify_snap /tmp/vs.out || { cat /tmp/vs.out; fail "snapshot verification during origin writes"; }
  wait $owpid || { cat /tmp/ow.out; fail "origin randwrite verification"; }
  record $M.fio "status after randwrite" "$(dmsetup status snap)"

  info "$M: verify the snapshot again"
  verify_snap /tmp/vs2.out || { cat /tmp/vs2.out; fail "snapshot verification after origin writes"; }

  info "$M: negative control: corrupt one snapshot block"
  zeros 4096 > /tmp/z
  write_at /dev/mapper/snap $((512 << 10)) /tmp/z
  if verify_snap /tmp/vs3.out --size=1m; then cat /tmp/vs3.out; fail "corruption not detected"; fi
  record $M.fio "corruption detected" yes
  dmsetup remove base; dmsetup remove snap; dmsetup remove base-real
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" fio

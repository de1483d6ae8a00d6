# SPDX-License-Identifier: GPL-2.0
# snapshot-merge with the table sequence LVM uses (snapshot-origin ->
# snapshot-merge, with -real and -cow devices): the merge copies the
# snapshot's data back, the origin ends up equal to the snapshot image, the
# status reaches "used == metadata", and the status sequence matches
# upstream's. Writes keep flowing to the origin device during the merge.
. /tests/lib.sh
run_case() {
  m=$1 chunk=$2
  load_module "$m"
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  size=65536   # 32 MiB
  dmsetup create base-real --table "0 $size linear /dev/vda 0"
  fill_mib /dev/mapper/base-real orig 32
  dmsetup create base-cow --table "0 65536 linear /dev/vdc 0"
  dmsetup create snap --table "0 $size snapshot /dev/mapper/base-real /dev/mapper/base-cow P $chunk"
  dmsetup create base --table "0 $size snapshot-origin /dev/mapper/base-real"
  # The snapshot is the image to roll back to; change the origin a lot.
  snapsum=$(sum_at /dev/mapper/snap 0 $(( size * 512 )))
  pattern upgrade 262144 > /tmp/u
  for off in 0 1048576 3145728 8388608 8650752 16777216 30408704; do write_at /dev/mapper/base $off /tmp/u; done
  # Also a write to the snapshot itself: it must be merged too.
  pattern snapw 65536 > /tmp/w; write_at /dev/mapper/snap 20971520 /tmp/w
  snapsum=$(sum_at /dev/mapper/snap 0 $(( size * 512 )))
  dmsetup status snap > /tmp/$m.$chunk.st

  # lvconvert --merge: suspend origin and snapshot, replace the origin's
  # table with snapshot-merge, the snapshot's with error, resume.
  dmsetup suspend base; dmsetup suspend snap
  dmsetup load base --table "0 $size snapshot-merge /dev/mapper/base-real /dev/mapper/base-cow P $chunk"
  dmsetup load snap --table "0 $size error"
  dmsetup resume base
  dmsetup resume snap
  dmsetup table base >> /tmp/$m.$chunk.st
  # Poll until used == metadata.
  n=0
  while :; do
    st=$(dmsetup status base)
    set -- $st
    used=${4%%/*}; meta=$5
    [ "$used" = "$meta" ] && break
    n=$((n + 1)); [ $n -lt 600 ] || fail "$m: merge did not finish: $st"
    sleep 0.1
  done
  dmsetup status base >> /tmp/$m.$chunk.st
  expect_eq "$m chunk $chunk: origin equals the snapshot image" "$(sum_at /dev/mapper/base 0 $(( size * 512 )))" "$snapsum"
  expect_eq "$m chunk $chunk: real device equals the snapshot image" "$(sum_at /dev/mapper/base-real 0 $(( size * 512 )))" "$snapsum"
  # Finish like LVM: back to a plain linear origin.
  dmsetup suspend base
  dmsetup load base --table "0 $size linear /dev/mapper/base-real 0"
  dmsetup resume base
  expect_eq "$m chunk $chunk: after the merge target is gone" "$(sum_at /dev/mapper/base 0 $(( size * 512 )))" "$snapsum"
  dmsetup remove base; dmsetup remove snap; dmsetup remove base-cow; dmsetup remove base-real
  unload_modules
}
for chunk in 8 128; do
  run_case upstream $chunk
  run_case rs $chunk
  cat /tmp/rs.$chunk.st
  cmp /tmp/upstream.$chunk.st /tmp/rs.$chunk.st || fail "status sequence differs from upstream (chunk $chunk)"
done

# SPDX-License-Identifier: GPL-2.0
# A running merge never blocks table changes around it (Rust module): with
# the merge stalled (its COW device suspended, so the copy back cannot
# read), resuming snapshot-merge, replacing the old snapshot's table with "error" (what lvconvert
# --merge does) and removing another snapshot of the same origin both
# complete. Once the COW resumes, the merge finishes and the origin equals
# the snapshot image; the other snapshot's data was intact before removal.
# A hang would show as a `timeout` failure or a hung scenario, not as a slow
# test. Upstream cannot run this: its snapshot-merge resume reads the COW
# synchronously (persistent_prepare_merge() from preresume), so it blocks
# on the suspended COW.
. /tests/lib.sh
SZ=65536
run_case() {
  m=$1
  load_module "$m"
  for i in 0 1; do $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$(( i * 8192 )) oflag=direct 2>/dev/null; done
  dmsetup create real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/real base 32
  dmsetup create cow0 --table "0 65536 linear /dev/vdc 0"
  dmsetup create cow1 --table "0 65536 linear /dev/vdc 65536"
  dmsetup create s0 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow0 P 8"
  dmsetup create s1 --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow1 P 8"
  dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
  image=$(sum_at /dev/mapper/s0 0 $(( SZ * 512 )))
  pattern upgrade 2097152 > /tmp/u
  write_at /dev/mapper/origin 4194304 /tmp/u
  [ "$(sum_at /dev/mapper/s0 0 $(( SZ * 512 )))" = "$image" ] || fail "$m: s0 changed"
  [ "$(sum_at /dev/mapper/s1 0 $(( SZ * 512 )))" = "$image" ] || fail "$m: s1 changed"

  dmsetup suspend origin; dmsetup suspend s0
  dmsetup load origin --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/cow0 P 8"
  dmsetup load s0 --table "0 $SZ error"
  # Stall the merge: its reads of the COW wait while cow0 is suspended.
  dmsetup suspend cow0
  timeout 60 dmsetup resume origin || fail "$m: resuming snapshot-merge blocked"
  timeout 60 dmsetup resume s0 || fail "$m: replacing the old snapshot table waited for the merge"
  set -- $(dmsetup status origin)
  [ "${4%%/*}" != "$5" ] || fail "$m: merge finished although its COW was suspended: $*"
  timeout 60 dmsetup remove s1 || fail "$m: removing another snapshot waited for the merge"
  dmsetup resume cow0
  wait_merged origin 300
  [ "$(sum_at /dev/mapper/origin 0 $(( SZ * 512 )))" = "$image" ] || fail "$m: origin is not the snapshot image after the merge"
  info "$m: merge ok; table changes did not wait for it"
  dmsetup remove_all --force
  unload_modules
}
run_case rs

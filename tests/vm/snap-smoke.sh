# SPDX-License-Identifier: GPL-2.0
# Smoke test of the snapshot target, LVM-style stacking, on both modules:
# origin writes keep the snapshot's view, snapshot writes stay private, and
# status/table lines match upstream's byte for byte.
. /tests/lib.sh
run_case() {
  m=$1
  load_module "$m"
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  # 64 MiB origin region with a known pattern.
  dmsetup create base-real --table "0 131072 linear /dev/vda 0"
  fill_mib /dev/mapper/base-real base 8
  before=$(sum_at /dev/mapper/base-real 0 8388608)
  dmsetup create cow --table "0 65536 linear /dev/vdc 0"
  dmsetup create snap --table "0 131072 snapshot /dev/mapper/base-real /dev/mapper/cow P 8"
  dmsetup create base --table "0 131072 snapshot-origin /dev/mapper/base-real"
  dmsetup status snap > /tmp/$m.status
  # Origin writes: full chunk, partial, unaligned 512 B, across a boundary.
  pattern new1 4096 > /tmp/a; write_at /dev/mapper/base 0 /tmp/a
  pattern new2 1024 > /tmp/b; write_at /dev/mapper/base 8192 /tmp/b
  pattern new3 512 > /tmp/c; write_at /dev/mapper/base 20480 /tmp/c
  pattern new4 8192 > /tmp/d; write_at /dev/mapper/base 30720 /tmp/d
  expect_eq "$m: snapshot keeps the old data" "$(sum_at /dev/mapper/snap 0 8388608)" "$before"
  expect_eq "$m: origin has the new data" "$(sum_at /dev/mapper/base 0 4096)" "$(sum_file /tmp/a)"
  expect_eq "$m: origin partial" "$(sum_at /dev/mapper/base 30720 8192)" "$(sum_file /tmp/d)"
  dmsetup status snap >> /tmp/$m.status
  # Snapshot writes stay in the snapshot.
  pattern s1 4096 > /tmp/e; write_at /dev/mapper/snap 65536 /tmp/e
  expect_eq "$m: snapshot write visible" "$(sum_at /dev/mapper/snap 65536 4096)" "$(sum_file /tmp/e)"
  expect_eq "$m: origin unchanged by snapshot write" "$(sum_at /dev/mapper/base 65536 4096)" "$(sum_at /dev/mapper/base-real 65536 4096)"
  dmsetup status snap >> /tmp/$m.status
  dmsetup table snap >> /tmp/$m.status
  # Tear down and reload: exceptions persist.
  dmsetup remove base; dmsetup remove snap
  dmsetup create snap --table "0 131072 snapshot /dev/mapper/base-real /dev/mapper/cow P 0"
  sum_at /dev/mapper/snap 0 8388608 > /tmp/$m.after
  dmsetup status snap >> /tmp/$m.status
  dmsetup table snap >> /tmp/$m.status
  dmsetup remove snap; dmsetup remove cow; dmsetup remove base-real
  unload_modules
  cat /tmp/$m.status
}
run_case upstream
run_case rs
cmp /tmp/upstream.status /tmp/rs.status || fail "status lines differ"

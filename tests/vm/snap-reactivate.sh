# SPDX-License-Identifier: GPL-2.0
# A persistent COW (exceptions in two metadata areas, origin and snapshot
# writes) survives removal of every dm device and a module reload: recreated
# with chunk size 0 (on-disk), the same, or a different one (on-disk wins),
# the snapshot reads as before and status is unchanged. With both modules:
# a COW written by one is read and extended by the other, both directions.
. /tests/lib.sh
SIZE=131072              # 64 MiB origin
C=4096
# W0 gets 384 chunks (areas 0 and 1 of a 4K-chunk store); W1, W2 scattered.
WINDOWS="0:$((2 << 20)) $((16 << 20)):$((256 << 10)) $(((64 << 20) - (256 << 10))):$((256 << 10))"
W1=$((16 << 20)) END=$((64 << 20))

create() {  # $1 = chunk size in the snapshot table
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real /dev/vdc P $1"
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"
}
remove_all() { dmsetup remove base; dmsetup remove snap; dmsetup remove base-real; }

fresh() {  # new COW, origin filled, snapshot created
  wipe_cow /dev/vdc
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  model_fill /dev/mapper/base-real mo 100
  model_copy mo ms
  dmsetup remove base-real
  create 8
}

writes_a() {
  mwrite /dev/mapper/base mo $((256 << 10)) $((1536 << 10)) 200   # 384 chunks
  mwrite /dev/mapper/base mo $((W1 + 8192)) $C 201
  mwrite /dev/mapper/base mo $((W1 + 102400 + 512)) 512 202
  mwrite /dev/mapper/snap ms $((W1 + 200 * 1024)) 8192 203
  mwrite /dev/mapper/snap ms $((END - C)) $C 204
}
writes_b() {
  mwrite /dev/mapper/base mo $((W1 + 40 * 1024)) 12288 300
  mwrite /dev/mapper/base mo $((1900 << 10)) $((64 << 10)) 301
  mwrite /dev/mapper/snap ms $((W1 + 8192)) $C 302                # copied in A
  mwrite /dev/mapper/snap ms $((END - 128 * 1024)) $C 303
}

check() {  # $1 = label; $2 = record file
  model_check "$1" /dev/mapper/base mo
  model_check "$1" /dev/mapper/snap ms $2
  STATUS=$(dmsetup status snap)
  record $2 "$1 status" "$STATUS"
  record $2 "$1 table" "$(dmsetup table snap)"
}

run_case() {
  M=$1; F=$M.react
  : > /tmp/$F
  load_module "$M"
  fresh
  writes_a
  check "written" $F
  s1=$STATUS
  remove_all
  info "$M: module reload, recreate with chunk size 0"
  load_module "$M"
  create 0
  check "chunk 0" $F
  expect_eq "status after reactivation" "$STATUS" "$s1"
  writes_b
  check "more writes" $F
  s2=$STATUS
  remove_all
  info "$M: recreate with chunk size 8"
  create 8
  check "chunk 8" $F
  expect_eq "status after reactivation" "$STATUS" "$s2"
  remove_all
  info "$M: recreate with chunk size 16: the on-disk 8 wins"
  dmesg -c > /dev/null
  create 16
  dmesg | grep -q "chunk size 8 in device metadata overrides table chunk size of 16." \
    || { dmesg | tail -3; fail "no chunk size override message"; }
  check "chunk 16" $F
  expect_eq "status after reactivation" "$STATUS" "$s2"
  expect_eq "table chunk" "$(dmsetup table snap | cut -d' ' -f7)" 8
  remove_all
  unload_modules
}

# cross A B: a COW written by A is read and extended by B, then read by A.
cross() {
  info "cross: written by $1, read by $2"
  load_module "$1"
  fresh
  writes_a
  check "$1 writes" cross.$1
  remove_all
  load_module "$2"
  create 0
  check "$2 reads $1" cross.$1
  writes_b
  check "$2 writes more" cross.$1
  remove_all
  load_module "$1"
  create 8
  check "$1 reads $2" cross.$1
  remove_all
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" react
if has_both "$mods"; then
  cross upstream rs
  cross rs upstream
else
  info "cross-module COW compatibility skipped: only '$mods' ran"
fi

# SPDX-License-Identifier: GPL-2.0
# A 100 KiB COW with 4K chunks holds 23 data chunks. P: the origin write
# that needs a 24th invalidates the snapshot (status Invalid, one table event,
# EIO on snapshot I/O, origin data intact) and valid=0 persists across
# recreate. PO: a snapshot write that overflows gives Overflow (no event).
. /tests/lib.sh
SIZE=131072              # 64 MiB origin
C=4096                   # chunk bytes (8 sectors)
WINDOWS="0:$((40 * C))"  # chunks 0..39

# io_read DEV OFF / io_write DEV OFF SEED: "ok" or "EIO" for one chunk of
# I/O (io_write leaves the data in /tmp/w.data).
io_read() { if read_fails "$1" "$2" $C; then echo EIO; else echo ok; fi; }
io_write() {
  gen "$3" $C > /tmp/w.data
  if write_fails "$1" "$2" /tmp/w.data; then echo EIO; else echo ok; fi
}

setup() {  # $1 = store type; fresh COW, filled origin, snap and base
  dmsetup create cow --table "0 200 linear /dev/vdc 0"
  wipe_cow /dev/mapper/cow
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  model_fill /dev/mapper/base-real mo 100
  model_copy mo ms
  dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real /dev/mapper/cow $1 8"
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"
}

teardown() { dmsetup remove base; dmsetup remove snap; dmsetup remove base-real; dmsetup remove cow; }

# recreate TYPE CHUNK: remove snap and base, load them again over the same COW.
recreate() {
  dmsetup remove base; dmsetup remove snap
  dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real /dev/mapper/cow $1 $2"
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"
}

st() { record $M.full.status "$1" "$(dmsetup status snap)"; }

run_case() {
  M=$1; F=$M.full.status
  : > /tmp/$F
  load_module "$M"

  info "$M: P, origin writes overfill the COW"
  setup P
  st created
  ev0=$(dm_events snap)
  i=0
  while [ $i -lt 23 ]; do mwrite /dev/mapper/base mo $((i * C)) $C $((200 + i)); i=$((i + 1)); done
  st "23 chunks"
  expect_eq "status with 23 chunks" "$(dmsetup status snap)" "0 $SIZE snapshot 200/200 16"
  model_check "$M P full" /dev/mapper/snap ms
  expect_eq "no event while valid" "$(dm_events snap)" "$ev0"
  dmesg -c > /dev/null
  while [ $i -lt 30 ]; do mwrite /dev/mapper/base mo $((i * C)) $C $((200 + i)); i=$((i + 1)); done
  st "30 chunks"
  expect_eq "status after overfill" "$(dmsetup status snap)" "0 $SIZE snapshot Invalid"
  dmesg | grep -q "Invalidating snapshot: Unable to allocate exception." || fail "no invalidation message"
  record $F "events raised" "$(( $(dm_events snap) - ev0 ))"
  [ "$(dm_events snap)" -gt "$ev0" ] || fail "no table event on invalidation"
  model_check "$M P origin after overfill" /dev/mapper/base mo
  model_check "$M P origin-real after overfill" /dev/mapper/base-real mo
  record $F "invalid: read copied chunk" "$(io_read /dev/mapper/snap 0)"
  record $F "invalid: read uncopied chunk" "$(io_read /dev/mapper/snap $((35 * C)))"
  record $F "invalid: write" "$(io_write /dev/mapper/snap $((36 * C)) 300)"
  [ "$(io_read /dev/mapper/snap 0)" = EIO ] || fail "invalid snapshot readable"
  # valid=0 is on disk: a new table over the same COW is loaded, Invalid.
  dmesg -c > /dev/null
  recreate P 8
  st "recreated"
  expect_eq "status after recreate" "$(dmsetup status snap)" "0 $SIZE snapshot Invalid"
  dmesg | grep -q "Snapshot is marked invalid." || fail "no 'marked invalid' message"
  [ "$(io_read /dev/mapper/snap 0)" = EIO ] || fail "recreated invalid snapshot readable"
  recreate P 0
  st "recreated chunk 0"
  record $F "table chunk 0" "$(dmsetup table snap)"
  expect_eq "status after recreate (chunk 0)" "$(dmsetup status snap)" "0 $SIZE snapshot Invalid"
  # Origin writes go on without copy-on-write.
  mwrite /dev/mapper/base mo $((31 * C)) $C 400
  model_check "$M P origin while invalid" /dev/mapper/base mo
  teardown

  info "$M: PO, snapshot writes overfill the COW"
  setup PO
  ev0=$(dm_events snap)
  i=0
  while [ $i -lt 23 ]; do mwrite /dev/mapper/snap ms $((i * C)) $C $((500 + i)); i=$((i + 1)); done
  st "PO 23 chunks"
  expect_eq "PO status with 23 chunks" "$(dmsetup status snap)" "0 $SIZE snapshot 200/200 16"
  record $F "PO overflowing write" "$(io_write /dev/mapper/snap $((23 * C)) 600)"
  st "PO overflowed"
  expect_eq "PO status after overflow" "$(dmsetup status snap)" "0 $SIZE snapshot Overflow"
  record $F "PO events after overflow" "$(( $(dm_events snap) - ev0 ))"
  # Still valid and readable; every write is refused, even to copied chunks.
  model_check "$M PO snapshot after overflow" /dev/mapper/snap ms
  model_check "$M PO origin after overflow" /dev/mapper/base mo
  record $F "PO overflow: read" "$(io_read /dev/mapper/snap $((23 * C)))"
  record $F "PO overflow: write copied chunk" "$(io_write /dev/mapper/snap 0 601)"
  record $F "PO overflow: write uncopied chunk" "$(io_write /dev/mapper/snap $((30 * C)) 602)"
  # Overflow is not on disk: a new table starts from the stored exceptions.
  recreate PO 8
  st "PO recreated"
  model_check "$M PO snapshot after recreate" /dev/mapper/snap ms
  r=$(io_write /dev/mapper/snap $((22 * C)) 603)
  record $F "PO recreated: write copied chunk" "$r"
  [ "$r" = ok ] || fail "write to a copied chunk of a recreated PO snapshot failed"
  patch_file /tmp/ms.0 $((22 * C)) /tmp/w.data
  model_check "$M PO snapshot after rewrite" /dev/mapper/snap ms
  # An origin write that needs a chunk invalidates even a PO snapshot.
  ev0=$(dm_events snap)
  mwrite /dev/mapper/base mo $((35 * C)) $C 700
  st "PO origin write"
  expect_eq "PO status after origin write" "$(dmsetup status snap)" "0 $SIZE snapshot Invalid"
  [ "$(dm_events snap)" -gt "$ev0" ] || fail "no table event on PO invalidation"
  model_check "$M PO origin" /dev/mapper/base mo
  record $F "PO invalid: read" "$(io_read /dev/mapper/snap 0)"
  teardown
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" full.status

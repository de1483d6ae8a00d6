# SPDX-License-Identifier: GPL-2.0
# Discards on a snapshot: without features they are unsupported; with
# discard_zeroes_cow a whole-chunk discard zeroes a copied chunk (COW space
# stays allocated) and is a no-op elsewhere; discard_passdown_origin also
# discards the origin without copy-on-write. Origin/COW are loop devices on
# tmpfs, so discarded ranges read as zeros. Discards to the origin target fail.
. /tests/lib.sh
SIZE=65536              # 32 MiB
C=4096
WINDOWS="0:$((64 * C)) $((1 << 20)):$((16 * C))"

zchunk() { zeros $C > /tmp/z; patch_file /tmp/$1.0 $(($2 * C)) /tmp/z; }   # model: zero chunk
rc() { if "$@" 2>/dev/null; then echo ok; else echo fail; fi; }
# dmax NAME: the dm device's queue/discard_max_bytes
dmax() { cat /sys/block/dm-$(dmsetup info -c --noheadings -o minor "$1" | tr -d ' ')/queue/discard_max_bytes; }

create() {  # $1 = feature args
  dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real /dev/loop1 P 8 $1"
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"
  record $M.discard "table '$1'" "$(dmsetup table snap)"
}

check() {
  model_check "$1" /dev/mapper/base mo $M.discard.sums
  model_check "$1" /dev/mapper/snap ms $M.discard.sums
  record $M.discard "$1 status" "$(dmsetup status snap)"
}

run_case() {
  M=$1
  : > /tmp/$M.discard; : > /tmp/$M.discard.sums
  load_module "$M"
  rm -f /tmp/o.img /tmp/c.img
  truncate -s 32M /tmp/o.img; truncate -s 16M /tmp/c.img
  losetup /dev/loop0 /tmp/o.img; losetup /dev/loop1 /tmp/c.img
  dmsetup create base-real --table "0 $SIZE linear /dev/loop0 0"
  model_fill /dev/mapper/base-real mo 100
  model_copy mo ms

  info "$M: no features"
  create ""
  record $M.discard "discard without features" "$(rc blkdiscard -o 0 -l $C /dev/mapper/snap)"
  record $M.discard "discard on the origin target" "$(rc blkdiscard -o 0 -l $C /dev/mapper/base)"
  record $M.discard "discard_max_bytes snap/base" \
    "$(dmax snap)/$(dmax base)"
  mwrite /dev/mapper/base mo 0 $((4 * C)) 200          # chunks 0-3 copied
  mwrite /dev/mapper/snap ms $((5 * C)) $C 201         # chunk 5 written in the snapshot
  check "no features"
  dmsetup remove base; dmsetup remove snap

  info "$M: discard_zeroes_cow"
  create "1 discard_zeroes_cow"
  record $M.discard "discard_max_bytes snap" "$(dmax snap)"
  blkdiscard -o 0 -l $C /dev/mapper/snap || fail "discard chunk 0"
  zchunk ms 0                                           # copied: zeroed
  blkdiscard -o $((5 * C)) -l $C /dev/mapper/snap || fail "discard chunk 5"
  zchunk ms 5
  blkdiscard -o $((8 * C)) -l $((2 * C)) /dev/mapper/snap || fail "discard chunks 8-9"
  # not copied: nothing happens
  check "zeroes_cow whole chunks"
  # A partial-chunk discard of a copied chunk goes to the COW device: with
  # the loop COW, those 1K read as zeros.
  blkdiscard -o $((C + 1024)) -l 1024 /dev/mapper/snap || fail "partial discard"
  zeros 1024 > /tmp/z; patch_file /tmp/ms.0 $((C + 1024)) /tmp/z
  check "zeroes_cow partial chunk"
  # The exceptions stay: origin writes to chunk 0 do not reach the snapshot.
  mwrite /dev/mapper/base mo 0 $C 202
  check "zeroes_cow origin write"
  dmsetup remove base; dmsetup remove snap

  info "$M: discard_zeroes_cow + discard_passdown_origin"
  create "2 discard_zeroes_cow discard_passdown_origin"
  # Chunk 2 copied: both the COW chunk and the origin are discarded.
  blkdiscard -o $((2 * C)) -l $C /dev/mapper/snap || fail "discard chunk 2"
  zchunk ms 2; zchunk mo 2
  # Chunk 12 not copied: the origin is discarded without a copy, so the
  # snapshot (which reads the origin there) sees zeros too.
  blkdiscard -o $((12 * C)) -l $C /dev/mapper/snap || fail "discard chunk 12"
  zchunk ms 12; zchunk mo 12
  check "passdown"
  record $M.discard "origin target discard (passdown)" "$(rc blkdiscard -o 0 -l $C /dev/mapper/base)"
  dmsetup remove base; dmsetup remove snap; dmsetup remove base-real
  losetup -d /dev/loop0; losetup -d /dev/loop1
  rm -f /tmp/o.img /tmp/c.img
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
if upstream_discard_oops; then
  mods=$(echo $mods | tr ' ' '\n' | grep -vx upstream | tr '\n' ' ')
  info "upstream's module oopses on discard_zeroes_cow tables here: this module only, against the models"
fi
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" discard discard.sums

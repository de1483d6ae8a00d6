# SPDX-License-Identifier: GPL-2.0
# snapshot + snapshot-origin stacked as LVM does (P/4K, P/64K, N/4K): origin
# writes (full, partial, unaligned 512 B, chunk-crossing, 1 MiB, last sector)
# leave the snapshot at its creation-time image; snapshot writes change only
# the snapshot. Data is checked against a model; status/table lines per phase
# are compared between upstream and rs when both provide `snapshot`.
. /tests/lib.sh
SIZE=524288               # 256 MiB origin: a linear device over vda
COW=/dev/vdc
ENDB=$((SIZE * 512))

# Windows "start:len" (bytes) that the case touches, around each region, with
# one spare chunk either side; C = chunk bytes.
windows() {
  local c=$1
  echo "$((9*c)):$((3*c)) $((19*c)):$((4*c)) $((29*c)):$((3*c)) $((39*c)):$((3*c))" \
       "$((49*c)):$((4*c)) $(((64<<20) - c)):$(((1<<20) + 2*c)) $((ENDB - 2*c)):$((2*c))"
}

owrite() { mwrite /dev/mapper/base mo "$@"; }
swrite() { mwrite /dev/mapper/snap ms "$@"; }

# check PHASE: origin and snapshot match their models; an untouched 4 MiB
# reads zero in both; status lines are recorded.
check() {
  model_check "$SPEC $1" /dev/mapper/base mo $M.basic.sums
  model_check "$SPEC $1" /dev/mapper/snap ms $M.basic.sums
  expect_eq "$M $SPEC $1 untouched origin" "$(sum_at /dev/mapper/base $((128 << 20)) $((4 << 20)))" "$ZSUM"
  expect_eq "$M $SPEC $1 untouched snapshot" "$(sum_at /dev/mapper/snap $((128 << 20)) $((4 << 20)))" "$ZSUM"
  record $M.basic.status "$SPEC $1 snap" "$(dmsetup status snap)"
  record $M.basic.status "$SPEC $1 base" "$(dmsetup status base)"
}

run_case() {
  M=$1
  : > /tmp/$M.basic.status; : > /tmp/$M.basic.table; : > /tmp/$M.basic.sums
  load_module "$M"
  for SPEC in P:8 P:128 N:8; do
    type=${SPEC%:*} cs=${SPEC#*:} c=$((${SPEC#*:} * 512))
    info "$M: snapshot $type $cs"
    WINDOWS=$(windows $c)
    wipe_cow $COW
    dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
    # Before the snapshot: fill every window with its own data.
    model_fill /dev/mapper/base-real mo 1000
    # The untouched region must read as zeros: earlier scenarios in this
    # boot may have written there.
    $DD if=/dev/zero of=/dev/mapper/base-real bs=1M count=4 seek=128 oflag=direct 2>/dev/null
    model_copy mo ms
    # LVM order: the snapshot's table first, then the origin's.
    dmsetup create snap --table "0 $SIZE snapshot /dev/mapper/base-real $COW $type $cs"
    dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"
    record $M.basic.table "$SPEC snap" "$(dmsetup table snap)"
    record $M.basic.table "$SPEC base" "$(dmsetup table base)"
    check created

    # Origin writes: the snapshot keeps the old data.
    owrite $((10*c)) $c 2001                    # one full chunk
    owrite $((20*c)) $((2*c)) 2002              # two full chunks
    owrite $((30*c + 1024)) 2048 2003           # inside one chunk
    owrite $((40*c + 1536)) 512 2004            # one unaligned sector
    owrite $((51*c - 1536)) 3072 2005           # across a chunk boundary
    owrite $((64 << 20)) $((1 << 20)) 2006      # 1 MiB, many chunks
    owrite $((ENDB - 512)) 512 2007             # the last sector
    check origin-writes
    # 264 chunks copied: data chunks 2..257, area 1 at 258, 259..266.
    [ $SPEC != P:8 ] || expect_eq "P 8 usage" "$(dmsetup status snap)" "0 $SIZE snapshot 2136/524288 24"

    # Snapshot writes: only the snapshot changes.
    swrite $((10*c)) $c 3001                    # full chunk, already copied
    swrite $((39*c + 512)) 1024 3002            # partial chunk, not copied yet
    swrite $((41*c)) $c 3003                    # full chunk, not copied yet
    swrite $((52*c - 512)) 1024 3004            # across: copied | not copied
    swrite $((ENDB - c)) 512 3005               # start of the last chunk
    check snapshot-writes

    # Suspend/resume of both keeps everything.
    dmsetup suspend base && dmsetup suspend snap
    dmsetup resume snap && dmsetup resume base

    # Origin writes over chunks the snapshot has written: no copy, the
    # snapshot keeps its own data.
    owrite $((10*c)) $c 4001
    owrite $((41*c + 512)) 512 4002
    owrite $((52*c - 512)) 1024 4003
    check origin-rewrites

    dmsetup remove base
    dmsetup remove snap
    dmsetup remove base-real
  done
  unload_modules
}

ZSUM=$(zeros $((4 << 20)) | $SUM | cut -d' ' -f1)
mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" basic.status basic.table basic.sums

# SPDX-License-Identifier: GPL-2.0
# One origin (262136 sectors: not a multiple of the 16K or 512K chunk) with
# three snapshots of 4K, 16K and 512K chunks on separate COWs, created between
# origin writes: each snapshot keeps the origin image of its creation time,
# including the partial last chunk; a snapshot write touches only its own.
. /tests/lib.sh
SIZE=262136
ENDB=$((SIZE * 512))
WINDOWS="0:$((1 << 20)) $((8 << 20)):$((1 << 20)) $((100 << 20)):$((256 << 10)) $((ENDB - (1 << 20))):$((1 << 20))"
W1=$((8 << 20)) W2=$((100 << 20)) W3=$((ENDB - (1 << 20)))

owrite() { mwrite /dev/mapper/base mo "$@"; }

check() {  # $1 = label, $2.. = snapshot numbers
  local l=$1 n; shift
  model_check "$l" /dev/mapper/base mo $M.multi.sums
  for n in "$@"; do model_check "$l" /dev/mapper/snap$n m$n $M.multi.sums; done
  record $M.multi.status "$l" "$(for n in "$@"; do dmsetup status snap$n; done | tr '\n' ';')"
}

# add_snapshot N COW CHUNK: a new snapshot of the live origin, LVM-style
# (origin suspended around it so its write split boundary is recomputed).
add_snapshot() {
  wipe_cow $2
  dmsetup suspend base
  dmsetup create snap$1 --table "0 $SIZE snapshot /dev/mapper/base-real $2 P $3"
  dmsetup resume base
  model_copy mo m$1
  record $M.multi.status "table snap$1" "$(dmsetup table snap$1)"
}

run_case() {
  M=$1
  : > /tmp/$M.multi.status; : > /tmp/$M.multi.sums
  load_module "$M"
  dmsetup create cow1 --table "0 131072 linear /dev/vdc 0"
  dmsetup create cow2 --table "0 131072 linear /dev/vdc 131072"
  dmsetup create base-real --table "0 $SIZE linear /dev/vda 0"
  model_fill /dev/mapper/base-real mo 100
  dmsetup create base --table "0 $SIZE snapshot-origin /dev/mapper/base-real"

  info "$M: snapshot 1 (4K)"
  add_snapshot 1 /dev/mapper/cow1 8
  owrite 0 $((64 << 10)) 201                      # 16 x 4K, 4 x 16K
  owrite $((W1 + 4096 + 512)) 1024 202            # unaligned
  owrite $((W2 + (128 << 10) - 512)) 1024 203     # across 4K/16K/512K chunks
  check "after snap1" 1

  info "$M: snapshot 2 (16K)"
  add_snapshot 2 /dev/mapper/cow2 32
  owrite 0 $((128 << 10)) 301                     # copied in 1 (half), new in 2
  owrite $((W1 + 12288)) $((48 << 10)) 302        # 16K chunk straddle
  owrite $((ENDB - 512)) 512 303                  # last sector (partial chunks)
  check "after snap2" 1 2

  info "$M: snapshot 3 (512K)"
  add_snapshot 3 /dev/vdd 1024
  owrite $((64 << 10)) $((512 << 10)) 401         # across the 512K boundary
  owrite $((W1 + 512)) 512 402
  owrite $((W3 + 4096)) $((8 << 10)) 403          # in the partial last 512K chunk
  owrite $((ENDB - 4096)) 4096 404
  check "after snap3" 1 2 3

  info "$M: write to snapshot 2"
  mwrite /dev/mapper/snap2 m2 $((W2 + 4096)) 4096 501
  mwrite /dev/mapper/snap2 m2 $((ENDB - 8192)) 8192 502
  owrite $((W2 + 8192)) 4096 503
  check "after snapshot write" 1 2 3

  info "$M: remove snapshot 2, then write"
  dmsetup suspend base
  dmsetup remove snap2
  dmsetup resume base
  owrite $((W1 + (256 << 10))) $((64 << 10)) 601
  check "after removing snap2" 1 3

  dmsetup remove base; dmsetup remove snap1; dmsetup remove snap3
  dmsetup remove base-real; dmsetup remove cow1; dmsetup remove cow2
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do run_case $impl; done
compare_modules "$mods" multi.status multi.sums

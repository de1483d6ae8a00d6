# SPDX-License-Identifier: GPL-2.0
# Corrupted exception areas on a COW with a valid header: every one is
# refused with "Failed to read snapshot metadata" and a log line naming the
# corruption, never an oops. (Upstream does not validate entries and loads
# some of these; this module checks every entry, see Documentation/.)
# Then a well-formed, hand-written COW loads and remaps correctly.
. /tests/lib.sh

# le32/le64 VALUE: little-endian bytes on stdout.
le() {
  local v=$1 n=$2 i=0 out=''
  while [ $i -lt $n ]; do
    out="$out\\$(printf '%03o' $(( v & 255 )))"
    v=$(( v >> 8 )); i=$((i + 1))
  done
  printf "$out"
}

# write_cow CHUNK_SECTORS "OLD:NEW OLD:NEW ..." [AREA_CHUNK]: a fresh COW
# image on /dev/mapper/cow with a valid header and the entries in area 0
# (or at AREA_CHUNK), terminated by a zero entry.
write_cow() {
  local cs=$1 entries=$2 area=${3:-1} e
  $DD if=/dev/zero of=/dev/mapper/cow bs=1M count=1 oflag=direct 2>/dev/null
  { printf 'SnAp'; le 1 4; le 1 4; le "$cs" 4; } > /tmp/hdr
  $DD if=/tmp/hdr of=/dev/mapper/cow bs=16 count=1 conv=notrunc oflag=sync 2>/dev/null
  : > /tmp/area
  for e in $entries; do le "${e%%:*}" 8 >> /tmp/area; le "${e##*:}" 8 >> /tmp/area; done
  $DD if=/tmp/area of=/dev/mapper/cow bs=512 seek=$(( area * cs )) conv=notrunc,sync oflag=sync 2>/dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches
}

# must_refuse WHAT "ENTRIES" PATTERN
must_refuse() {
  write_cow 8 "$2"
  dmesg -c >/dev/null
  if dmsetup create snap --table "0 65536 snapshot /dev/mapper/real /dev/mapper/cow P 8" 2>/dev/null; then
    dmsetup status snap
    dmsetup remove snap
    fail "$1: corrupt COW accepted"
  fi
  dmesg | grep -q "Failed to read snapshot metadata" || { dmesg | tail -5; fail "$1: no ctr error"; }
  dmesg | grep -q "$3" || { dmesg | tail -5; fail "$1: log does not say '$3'"; }
  info "$1: refused ($(dmesg | grep -o "$3" | head -1))"
}

load_module rs
dmsetup create real --table "0 65536 linear /dev/vda 0"
# A 1 MiB COW: 256 chunks of 4K; metadata areas at chunks 1 and 258.
dmsetup create cow --table "0 2048 linear /dev/vdc 0"

must_refuse "past the device" "5:2 6:300" "past the end of the COW"
must_refuse "into a metadata area" "5:2 6:1" "points into snapshot metadata"
must_refuse "duplicate origin chunk" "5:2 5:3" "duplicate exception"
must_refuse "same COW chunk twice" "5:2 6:2" "share one COW chunk"
# The same inside runs of consecutive entries (loaded a run at a time).
must_refuse "run past the device" "5:252 6:253 7:254 8:255 9:256" "area 0 slot 4: exception points past the end of the COW"
must_refuse "COW chunk inside a run twice" "5:2 6:3 7:4 8:5 20:4" "share one COW chunk"
must_refuse "run over another run's origin chunks" "5:2 6:3 7:4 4:10 5:11" "duplicate exception"

# A full area 0 whose next area lies past the device (a truncated COW).
full=""; i=0
while [ $i -lt 256 ]; do full="$full $((1000 + i)):$((2 + i))"; i=$((i + 1)); done
must_refuse "truncated after a full area" "$full" "past the end of the COW device"

# must_load WHAT "ENTRIES" OLD NEW COUNT STATUS: a COW whose entries map
# origin chunks OLD.. to COW chunks NEW.. (COUNT of them, holding a
# pattern) loads with STATUS, the snapshot reads the pattern there and the
# origin's data in the chunk after them.
must_load() {
  local len=$(($5 * 4096))
  pattern "cow$1" $len > /tmp/cowdata
  write_cow 8 "$2"
  write_at /dev/mapper/cow $(($4 * 4096)) /tmp/cowdata
  dmsetup create snap --table "0 65536 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  expect_eq "$1: status" "$(dmsetup status snap)" "$6"
  expect_eq "$1: remapped chunks" "$(sum_at /dev/mapper/snap $(($3 * 4096)) $len)" "$(sum_file /tmp/cowdata)"
  local next=$((($3 + $5) * 4096))
  expect_eq "$1: next chunk from the origin" "$(sum_at /dev/mapper/snap $next 4096)" "$(sum_at /dev/mapper/real $next 4096)"
  dmsetup remove snap
}
# A well-formed hand-written COW: origin chunk 5 -> COW chunk 2.
must_load "one entry" "5:2" 5 2 1 "0 65536 snapshot 24/2048 16"
# A run: origin chunks 254..258 (crossing a 256-chunk group) -> COW 3..7.
must_load "a run" "254:3 255:4 256:5 257:6 258:7" 254 3 5 "0 65536 snapshot 64/2048 16"
dmsetup remove cow; dmsetup remove real

# A stale entry behind the terminator (left by a torn area write): 5:2,
# end, 9:3. The next exception takes COW chunk 3 and slot 1, so the commit
# makes slot 2 the end of the list only if the area was zeroed past it.
# Upstream keeps the stale bytes: after a reload it maps origin chunk 9 to
# COW chunk 3, which holds origin chunk 20's old data. Here chunk 9 must
# read the origin's data.
stale_case() {
  load_module "$1"
  dmsetup create real --table "0 65536 linear /dev/vda 0"
  dmsetup create cow --table "0 2048 linear /dev/vdc 0"
  pattern stale9 4096 > /tmp/w9; write_at /dev/mapper/real $((9 * 4096)) /tmp/w9
  pattern old20 4096 > /tmp/w20; write_at /dev/mapper/real $((20 * 4096)) /tmp/w20
  write_cow 8 "5:2 0:0 9:3"
  dmsetup create snap --table "0 65536 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup create orig --table "0 65536 snapshot-origin /dev/mapper/real"
  pattern new20 4096 > /tmp/n20
  write_at /dev/mapper/orig $((20 * 4096)) /tmp/n20
  dmsetup remove orig; dmsetup remove snap
  dmsetup create snap --table "0 65536 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  got=$(sum_at /dev/mapper/snap $((9 * 4096)) 4096)
  want=$(sum_file /tmp/w9)
  expect_eq "$1: origin chunk 20 copied out" "$(sum_at /dev/mapper/snap $((20 * 4096)) 4096)" "$(sum_file /tmp/w20)"
  st=$(dmsetup status snap)
  dmsetup remove snap; dmsetup remove cow; dmsetup remove real
  unload_modules
}
stale_case upstream
[ "$got" = "$want" ] && info "upstream: the stale entry stayed dead" || info "upstream: the stale entry came back after the next commit ($st): chunk 9 reads COW data"
stale_case rs
expect_eq "a stale entry behind the terminator stays dead after the next commit ($st)" "$got" "$want"
expect_eq "rs: two exceptions after the reload" "$st" "0 65536 snapshot 32/2048 16"

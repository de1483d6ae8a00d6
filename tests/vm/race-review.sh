# SPDX-License-Identifier: GPL-2.0
# Two races found by the review of the issue 17 fixes, with the windows
# held open by dm-delay; both modules in one boot, data checked.
#
# merge-vs-invalid: snapshot B of the origin has a full COW whose writes
#   are delayed 8 s. Merging snapshot A overwrites an origin chunk B has no
#   copy of: B must be invalid on disk (raw header valid = 0) before the
#   origin holds A's data there (upstream writes B's header before the
#   merge copies: origin_write_extent -> __invalidate_snapshot).
# read-stream: snapshot reads keep a stream of reads in flight to a slow
#   origin (reads delayed 300 ms). A partial snapshot write and an origin
#   write to other chunks must complete while that stream still runs: the
#   wait for conflicting reads covers the chunk, not every chunk that
#   shares its tracking bucket.
. /tests/lib.sh
SZ=65536
bad=

merge_vs_invalid() {
  m=$1
  load_module "$m"
  insmod /modules/dm-delay.ko 2>/dev/null || true
  for s in 0 1; do $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 seek=$((s * 8192)) oflag=direct 2>/dev/null; done
  wipe_cow /dev/vdd
  dmsetup create real --table "0 $SZ linear /dev/vda 0"
  fill_mib /dev/mapper/real rvi 32
  dmsetup create acow --table "0 32768 linear /dev/vdc 0"
  # B: header, one area, two data chunks.
  dmsetup create bcow --table "0 32 delay /dev/vdd 0 0 /dev/vdd 0 0"
  dmsetup create a --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/acow P 8"
  dmsetup create b --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/bcow P 8"
  dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
  gen bfill 8192 > /tmp/bf
  write_at /dev/mapper/origin $((100 * 4096)) /tmp/bf     # fills B (chunks 100, 101)
  gen amine 4096 > /tmp/am
  write_at /dev/mapper/a $((10 * 4096)) /tmp/am             # A's own chunk 10
  bsum=$(sum_at /dev/mapper/b $((10 * 4096)) 4096)
  dmsetup status b > /tmp/$m.rv
  dmsetup suspend bcow; dmsetup load bcow --table "0 32 delay /dev/vdd 0 0 /dev/vdd 0 8000"; dmsetup resume bcow
  dmsetup suspend origin; dmsetup suspend a
  dmsetup load origin --table "0 $SZ snapshot-merge /dev/mapper/real /dev/mapper/acow P 8"
  dmsetup load a --table "0 $SZ error"
  dmsetup resume origin; dmsetup resume a
  n=0
  until [ "$(sum_at /dev/mapper/real $((10 * 4096)) 4096)" = "$(sum_file /tmp/am)" ]; do
    n=$((n + 1)); [ $n -lt 400 ] || fail "$m: merge-vs-invalid: the merge never reached chunk 10"
    sleep 0.05
  done
  valid=$(read_at /dev/vdd 0 512 | od -An -tu4 -j4 -N4 | tr -d ' ')
  echo "merge-vs-invalid: B's header valid when the origin changed: $valid" >> /tmp/$m.rv
  [ "$valid" = 0 ] || { echo "FAIL $m merge-vs-invalid: B still valid on disk when the merge overwrote chunk 10"; bad="$bad $m:merge-vs-invalid"; }
  wait_merged origin
  dmsetup status b >> /tmp/$m.rv
  if read_fails /dev/mapper/b 0 4096; then :; else
    echo "FAIL $m merge-vs-invalid: B still readable"; bad="$bad $m:merge-vs-invalid-read"
  fi
  dmsetup remove origin; dmsetup remove a; dmsetup remove b
  # B reloaded from disk must be invalid (it misses chunk 10's old data).
  dmsetup suspend bcow; dmsetup load bcow --table "0 32 delay /dev/vdd 0 0 /dev/vdd 0 0"; dmsetup resume bcow
  dmsetup create b --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/bcow P 8"
  dmsetup status b >> /tmp/$m.rv
  dmsetup remove b; dmsetup remove bcow; dmsetup remove acow; dmsetup remove real
  unload_modules
  : "$bsum"
}

read_stream() {
  m=$1
  load_module "$m"
  insmod /modules/dm-delay.ko 2>/dev/null || true
  wipe_cow /dev/vdc
  dmsetup create real --table "0 $SZ delay /dev/vda 0 300 /dev/vda 0 0"
  fill_mib /dev/mapper/real rrs 32
  dmsetup create cow --table "0 32768 linear /dev/vdc 0"
  dmsetup create snap --table "0 $SZ snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup create origin --table "0 $SZ snapshot-origin /dev/mapper/real"
  # Reads of every 64th chunk from chunk 48 (the tracking bucket of the
  # chunks written below, none of them), by four jobs out of phase, so
  # that some are always in flight, for 20 s.
  fio --filename=/dev/mapper/snap --rw=read:252k --bs=4k --offset=196608 --size=16M \
    --iodepth=16 --direct=1 --ioengine=libaio --time_based --runtime=20 \
    --name=r1 --name=r2 --startdelay=75ms --name=r3 --startdelay=150ms --name=r4 --startdelay=225ms \
    > /tmp/fio.out 2>&1 &
  fp=$!
  sleep 5
  gen rsw 512 > /tmp/rsw
  write_at /dev/mapper/snap $((6000 * 4096)) /tmp/rsw       # partial: a copy
  gen row 4096 > /tmp/row
  write_at /dev/mapper/origin $((7024 * 4096)) /tmp/row
  if kill -0 $fp 2>/dev/null; then
    echo "read-stream: both writes completed while the reads ran" >> /tmp/$m.rs
  else
    echo "FAIL $m read-stream: the writes completed only after the read stream ended"; bad="$bad $m:read-stream"
  fi
  wait $fp || true
  grep -E 'read: IOPS|lat \(msec\): min' /tmp/fio.out | head -4 | sed "s/^/-- $m read-stream fio: /"
  want=$( { gen rsw 512; read_at /dev/vda $((6000 * 4096 + 512)) 3584; } | $SUM | cut -d' ' -f1)
  expect_eq "$m: read-stream: snapshot chunk 6000" "$(sum_at /dev/mapper/snap $((6000 * 4096)) 4096)" "$want"
  expect_eq "$m: read-stream: origin chunk 7024" "$(sum_at /dev/mapper/origin $((7024 * 4096)) 4096)" "$(sum_file /tmp/row)"
  dmsetup remove origin; dmsetup remove snap; dmsetup remove cow; dmsetup remove real
  unload_modules
}

for m in upstream rs; do
  merge_vs_invalid $m
  read_stream $m
done
cat /tmp/rs.rv
cmp /tmp/upstream.rv /tmp/rs.rv || { diff /tmp/upstream.rv /tmp/rs.rv || true; bad="$bad status-lines"; }
cmp /tmp/upstream.rs /tmp/rs.rs || bad="$bad read-stream-record"
[ -z "$bad" ] || fail "failing:$bad"

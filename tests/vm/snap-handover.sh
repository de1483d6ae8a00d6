# SPDX-License-Identifier: GPL-2.0
# Table reload of a live snapshot (what lvchange --refresh and dmsetup
# reload do): the new table takes the exception store over on resume, with
# the origin busy; nothing is lost, the old table returns EIO, status lines
# match upstream's at every step.
. /tests/lib.sh
# The last table or snapshot error the kernel logged (device numbers out).
dm_error() {
  dmesg | grep -E 'device-mapper: (table|snapshots)' | tail -1 | sed 's/^\[[^]]*\] //; s/ [0-9]*:[0-9]*:/ X:/'
}
# attempt LABEL CMD...: runs CMD, records "LABEL: accepted" or "LABEL:
# refused: " and the kernel's message; the exit status is CMD's.
attempt() {
  local label=$1; shift
  dmesg -c > /dev/null
  if "$@" 2>/dev/null; then echo "$label: accepted" >> /tmp/$m.st; return 0; fi
  echo "$label: refused: $(dm_error)" >> /tmp/$m.st
  return 1
}
run_case() {
  m=$1
  load_module "$m"
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  dmsetup create base-real --table "0 65536 linear /dev/vda 0"
  fill_mib /dev/mapper/base-real orig 32
  model=$(sum_at /dev/mapper/base-real 0 33554432)
  dmsetup create cow --table "0 65536 linear /dev/vdc 0"
  dmsetup create snap --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow P 16"
  dmsetup create base --table "0 65536 snapshot-origin /dev/mapper/base-real"
  pattern new1 65536 > /tmp/a; write_at /dev/mapper/base 0 /tmp/a
  pattern s1 8192 > /tmp/s; write_at /dev/mapper/snap 1048576 /tmp/s
  dmsetup status snap > /tmp/$m.st

  # Loading a new table while the source runs is fine; resuming it without
  # suspending the source is refused.
  dmsetup reload snap --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow P 16"
  # Origin writes keep going during the reload.
  pattern new2 65536 > /tmp/b; write_at /dev/mapper/base 2097152 /tmp/b
  dmsetup suspend snap
  dmsetup resume snap
  dmsetup status snap >> /tmp/$m.st
  dmsetup table snap >> /tmp/$m.st
  pattern new3 65536 > /tmp/c; write_at /dev/mapper/base 4194304 /tmp/c
  # The snapshot still shows the original data except its own write.
  expect_eq "$m: snapshot chunk 0 after reload" "$(sum_at /dev/mapper/snap 0 65536)" "$(pattern orig 1048576 | head -c 65536 | $SUM | cut -d' ' -f1)"
  expect_eq "$m: snapshot own write after reload" "$(sum_at /dev/mapper/snap 1048576 8192)" "$(sum_file /tmp/s)"
  expect_eq "$m: snapshot after writes at 2M" "$(sum_at /dev/mapper/snap 2097152 65536)" "$(pattern orig 1048576 | head -c 65536 | $SUM | cut -d' ' -f1)"
  expect_eq "$m: snapshot after writes at 4M" "$(sum_at /dev/mapper/snap 4194304 65536)" "$(pattern orig 1048576 | head -c 65536 | $SUM | cut -d' ' -f1)"
  dmsetup status snap >> /tmp/$m.st

  # A second snapshot table on the same COW, then a third: the third is
  # refused while the second waits.
  # (PO 0: the handover takes the chunk size from the live store.)
  dmsetup create snap2 --notable
  dmsetup load snap2 --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow PO 0"
  # A waiting table's lines show its own store, not read yet (upstream's).
  echo "waiting: $(dmsetup table --inactive snap2); $(dmsetup status --inactive snap2)" >> /tmp/$m.st
  if dmsetup create snap3 --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow P 16" 2>/dev/null; then
    fail "$m: third table on one COW accepted"
  fi
  # Resuming the waiting table while the source runs is refused.
  if dmsetup resume snap2 2>/dev/null; then fail "$m: handover with a running source"; fi
  dmsetup suspend snap
  dmsetup resume snap2
  dmsetup status snap >> /tmp/$m.st
  dmsetup status snap2 >> /tmp/$m.st
  # The old table shows the store swapped into it: the new table's own.
  echo "old table after the handover: $(dmsetup table snap)" >> /tmp/$m.st
  echo "new table after the handover: $(dmsetup table snap2)" >> /tmp/$m.st
  dmsetup resume snap
  # The old table is alive after the handover: a third table on the COW
  # is refused (upstream counts both).
  attempt "table while the old one is alive after a handover" \
    dmsetup create snap4 --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow P 16" || true
  dmsetup remove snap4 2>/dev/null || true
  if $DD if=/dev/mapper/snap of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
    fail "$m: old table still serves I/O after the handover"
  fi
  expect_eq "$m: new table serves the data" "$(sum_at /dev/mapper/snap2 1048576 8192)" "$(sum_file /tmp/s)"
  dmsetup remove snap
  pattern new4 65536 > /tmp/d; write_at /dev/mapper/base 6291456 /tmp/d
  expect_eq "$m: copy-on-write continues" "$(sum_at /dev/mapper/snap2 6291456 65536)" "$(pattern orig 1048576 | head -c 65536 | $SUM | cut -d' ' -f1)"
  dmsetup status snap2 >> /tmp/$m.st

  # A reload may name another store type: the store stays what it is, and
  # the table line shows it as upstream does (its store is swapped in).
  # N and PO over the persistent store, then P over a transient one.
  for t in N PO P; do
    dmsetup reload snap2 --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow $t 16"
    echo "waiting $t: $(dmsetup table --inactive snap2); $(dmsetup status --inactive snap2)" >> /tmp/$m.st
    dmsetup suspend snap2; dmsetup resume snap2
    echo "reloaded with $t: $(dmsetup table snap2)" >> /tmp/$m.st
  done
  # A chunk size the store constructor refuses is refused on a reload too.
  if attempt "reload with chunk size 3" \
    dmsetup reload snap2 --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow P 3"; then
    dmsetup clear snap2
  fi
  expect_eq "$m: snapshot own write after the type reloads" "$(sum_at /dev/mapper/snap2 1048576 8192)" "$(sum_file /tmp/s)"
  dmsetup create cown --table "0 32768 linear /dev/vdc 65536"
  dmsetup create snapn --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cown N 8"
  pattern n1 8192 > /tmp/n; write_at /dev/mapper/snapn 0 /tmp/n
  for t in P PO N; do
    dmsetup reload snapn --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cown $t 8"
    echo "transient waiting $t: $(dmsetup table --inactive snapn); $(dmsetup status --inactive snapn)" >> /tmp/$m.st
    dmsetup suspend snapn; dmsetup resume snapn
    echo "transient reloaded with $t: $(dmsetup table snapn); $(dmsetup status snapn)" >> /tmp/$m.st
  done
  expect_eq "$m: transient snapshot's own write after the type reloads" "$(sum_at /dev/mapper/snapn 0 8192)" "$(sum_file /tmp/n)"
  attempt "merge table over the transient store" \
    dmsetup create snapm --table "0 65536 snapshot-merge /dev/mapper/base-real /dev/mapper/cown P 8" || true
  dmsetup remove snapm 2>/dev/null || true
  dmsetup remove snapn; dmsetup remove cown

  # A table loaded and never resumed: a second load on its COW (a reload
  # of the inactive slot) is refused, the first stays and resumes.
  dmsetup create cow3 --table "0 32768 linear /dev/vdc 98304"
  wipe_cow /dev/mapper/cow3
  dmsetup create snapx --notable
  dmsetup load snapx --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow3 P 8"
  attempt "second load on a never resumed table's COW" \
    dmsetup load snapx --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow3 P 16" || true
  dmsetup resume snapx
  echo "after the second load: $(dmsetup table snapx); $(dmsetup status snapx)" >> /tmp/$m.st
  expect_eq "$m: the never resumed snapshot reads the origin" "$(sum_at /dev/mapper/snapx 0 65536)" "$(sum_at /dev/mapper/base 0 65536)"
  dmsetup remove snapx; dmsetup remove cow3
  # Two snapshots created at once on one COW whose reads take 1 s
  # (dm-delay): the first constructor reads the metadata while the second
  # checks; exactly one may succeed.
  grep -q '^dm_delay ' /proc/modules || insmod /modules/dm-delay.ko
  dmsetup create cow5 --table "0 32768 linear /dev/vdc 131072"
  wipe_cow /dev/mapper/cow5
  dmsetup create dcow --table "0 32768 delay /dev/mapper/cow5 0 1000 /dev/mapper/cow5 0 0"
  rm -f /tmp/cc.*
  for n in a b; do
    ( dmsetup create snap$n --table "0 65536 snapshot /dev/mapper/base-real /dev/mapper/dcow P 8" > /dev/null 2>&1 &&
      echo ok > /tmp/cc.$n || echo refused > /tmp/cc.$n ) &
  done
  wait
  echo "two concurrent creates on one COW: $(cat /tmp/cc.a /tmp/cc.b | grep -c ok) succeeded" >> /tmp/$m.st
  for n in a b; do dmsetup remove snap$n 2>/dev/null || true; done
  dmsetup remove dcow; dmsetup remove cow5
  # A cancelled handover (the source removed while a table waits): the
  # waiting table holds the COW until it is destroyed, also when both go
  # at once.
  dmsetup create cow6 --table "0 32768 linear /dev/vdc 163840"
  wipe_cow /dev/mapper/cow6
  t6="0 65536 snapshot /dev/mapper/base-real /dev/mapper/cow6 P 8"
  for how in "one after the other" "at once"; do
    dmsetup create snapc --table "$t6"
    dmsetup create snapd --notable
    dmsetup load snapd --table "$t6"
    if [ "$how" = "at once" ]; then
      dmsetup remove snapc & dmsetup remove snapd & wait
    else
      dmsetup remove snapc
      attempt "a table on the COW of a cancelled handover" dmsetup create snape --table "$t6" &&
        dmsetup remove snape
      echo "the cancelled table: $(dmsetup table --inactive snapd); $(dmsetup status --inactive snapd)" >> /tmp/$m.st
      dmsetup remove snapd
    fi
    attempt "a table on that COW once both are removed ($how)" dmsetup create snape --table "$t6" &&
      dmsetup remove snape
  done
  dmsetup remove cow6
  dmsetup remove base; dmsetup remove snap2; dmsetup remove snap3 2>/dev/null || true
  dmsetup remove cow; dmsetup remove base-real
  unload_modules
  cat /tmp/$m.st
}
run_case upstream
run_case rs
cmp /tmp/upstream.st /tmp/rs.st || fail "status lines differ from upstream"

# SPDX-License-Identifier: GPL-2.0
# Helpers sourced by the benchmark guest scripts (bench/guest/bench-*.sh).
# They run in the test VM (scripts/vm/run.sh) from a shadow tree built by
# scripts/bench.sh; /tests/bench-env.sh holds the profile's parameters.
#
# Output: one line per measurement on ttyS1 (results.log on the host):
#   BENCH {json}                      a figure measured here
#   BENCHFIO {meta json}<TAB>{fio json}  a fio run, parsed on the host
# Disks: vda origin disk, vdb COW disk (up to four slices), vdc and vdd
# prebuilt COWs for the activation test (sequential and random layout).
. /tests/lib.sh
. /tests/bench-env.sh

RSECT=$((REGION_MB * 2048))
# One COW slice: the region's data, plus 1/256 metadata at 4 KiB chunks,
# plus slack.
COWSECT=$((RSECT + RSECT / 8 + 8192))

# impls REP: both implementations, the order alternating with the repetition.
impls() { if [ $(($1 % 2)) = 0 ]; then echo "upstream rs"; else echo "rs upstream"; fi; }
seqn() { i=0; while [ $i -lt "$1" ]; do echo $i; i=$((i + 1)); done; }

# now_us: a microsecond clock (busybox date has no %N): the printk time
# stamp of a marker written to /dev/kmsg.
now_us() {
  echo "benchclock" > /dev/kmsg
  dmesg | sed -n 's/^\[ *\([0-9]*\)\.\([0-9]*\)\] benchclock$/\1\2/p' | tail -1
}

# disk_flushes: flush requests the virtual disks completed so far (field 19
# of /proc/diskstats; the block layer sends one flush for all the PREFLUSH
# and FUA requests pending at the time, so this counts real device flushes).
disk_flushes() { awk '$3 ~ /^vd[a-z]$/ { n += $19 } END { print n + 0 }' /proc/diskstats; }

# fio_run META ARG...: one fio run; prints its JSON (one line) after META
# (a JSON object missing its closing brace), with the disk flushes it caused.
fio_run() {
  meta=$1; shift
  rm -f /tmp/fio.json
  flushes0=$(disk_flushes)
  if fio --name=b --direct=1 --ioengine=libaio --randrepeat=1 --random_generator=lfsr \
      --percentile_list=50:99 --lat_percentiles=1 --output-format=json --output=/tmp/fio.json "$@" > /tmp/fio.err 2>&1; then
    printf 'BENCHFIO %s,"disk_flushes":%d}\t' "$meta" $(($(disk_flushes) - flushes0)); tr -d '\n' < /tmp/fio.json; echo
  else
    echo "BENCHERR $meta} fio failed: $(head -c 300 /tmp/fio.err | tr '\n' ' ')"
  fi
}

# stack_up NSNAPS CHUNK: LVM's layout: base-real (linear over the region of
# vda), cowI (slices of vdb, header wiped), snapI (snapshot P CHUNK),
# base (snapshot-origin). NSNAPS 0: the origin has no snapshot.
stack_up() {
  dmsetup create base-real --table "0 $RSECT linear /dev/vda 0"
  for i in $(seqn "$1"); do
    dmsetup create cow$i --table "0 $COWSECT linear /dev/vdb $((i * COWSECT))"
    wipe_cow /dev/mapper/cow$i
    dmsetup create snap$i --table "0 $RSECT snapshot /dev/mapper/base-real /dev/mapper/cow$i P $2"
  done
  dmsetup create base --table "0 $RSECT snapshot-origin /dev/mapper/base-real"
}
stack_down() {
  dmsetup remove_all --force > /dev/null 2>&1 || true
  [ -z "$(dmsetup ls 2>/dev/null | grep -v 'No devices')" ] || { dmsetup ls; fail "devices left"; }
}

# fill DEV MIB: write MIB MiB from offset 0 (1 MiB O_DIRECT writes).
fill() { $DD if=/dev/zero of="$1" bs=1M count="$2" oflag=direct conv=notrunc 2>/dev/null || fail "fill $1"; }

# meminfo_kb FIELD
meminfo_kb() { awk -v f="$1:" '$1 == f { print $2 }' /proc/meminfo; }

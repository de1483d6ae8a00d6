# SPDX-License-Identifier: GPL-2.0
# Runs in a VM booted with kmemleak=on (see scripts/test.sh): exercise every
# target and the error paths, unload the module, and require kmemleak to
# find nothing.
. /tests/lib.sh
KL=/sys/kernel/debug/kmemleak
[ -e $KL ] || fail "kmemleak not available (boot with kmemleak=on)"
echo clear > $KL
for round in 1 2; do
  load_module rs kunit_scratch_dev=/dev/vdd
  $DD if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>/dev/null
  dmsetup create real --table "0 32768 linear /dev/vda 0"
  dmsetup create cow --table "0 16384 linear /dev/vdc 0"
  dmsetup create snap --table "0 32768 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup create snapn --table "0 32768 snapshot /dev/mapper/real /dev/vdc N 16" 2>/dev/null || true
  dmsetup create origin --table "0 32768 snapshot-origin /dev/mapper/real"
  pattern leak$round 1048576 > /tmp/p
  write_at /dev/mapper/origin 0 /tmp/p
  write_at /dev/mapper/snap 2097152 /tmp/p
  # A reload (handover), a bad table, then a merge.
  dmsetup reload snap --table "0 32768 snapshot /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup suspend snap; dmsetup resume snap
  dmsetup create bad --table "0 32768 snapshot /dev/mapper/real /dev/mapper/cow X 8" 2>/dev/null && fail "bad table accepted"
  dmsetup remove bad 2>/dev/null || true
  dmsetup remove snapn 2>/dev/null || true
  dmsetup suspend origin; dmsetup suspend snap
  dmsetup load origin --table "0 32768 snapshot-merge /dev/mapper/real /dev/mapper/cow P 8"
  dmsetup load snap --table "0 32768 error"
  dmsetup resume origin; dmsetup resume snap
  n=0
  while :; do
    set -- $(dmsetup status origin)
    [ "${4%%/*}" = "$5" ] && break
    n=$((n + 1)); [ $n -lt 300 ] || fail "merge did not finish"
    sleep 0.1
  done
  dmsetup remove origin; dmsetup remove snap; dmsetup remove cow; dmsetup remove real
  unload_modules
done
# Let RCU and deferred frees settle, then scan twice (kmemleak reports an
# object only once it stayed unreferenced across scans).
sleep 2
echo scan > $KL; sleep 1; echo scan > $KL
leaks=$(grep -c 'unreferenced object' $KL || true)
if [ "$leaks" != 0 ]; then
  head -60 $KL
  fail "kmemleak found $leaks unreferenced objects"
fi
echo "kmemleak: no leaks"

# SPDX-License-Identifier: GPL-2.0
# Bad snapshot table lines are refused with upstream's kernel messages
# (argument counts, store types, chunk sizes, feature groups, devices,
# corrupt COW headers, handover pairing); odd but legal lines are accepted
# and echoed as upstream does; 100 random argument lists never splat.
. /tests/lib.sh
L=131072                  # 64 MiB
O=/dev/vda
C=/dev/vdc

# expect_ok TABLE: the table loads; its table and status lines are recorded.
expect_ok() {
  dmsetup create good --table "0 $L $1" || fail "table '$1' refused"
  record $M.bad.lines "$1" "$(dmsetup table good) | $(dmsetup status good)"
  dmsetup remove good
}

# expect_ok_discard TABLE LINE: expect_ok for a discard_zeroes_cow table,
# whose table line must end in LINE. Where upstream's module oopses on such
# tables (upstream_discard_oops), only this module loads them, and the
# expected line is the check.
expect_ok_discard() {
  if ! upstream_discard_oops; then
    expect_ok "$1"
    return
  fi
  [ "$M" = upstream ] && return 0
  dmsetup create good --table "0 $L $1" || fail "table '$1' refused"
  local t
  t=$(dmsetup table good)
  dmsetup remove good
  case "$t" in
    *" $2") ;;
    *) fail "table '$1' reads back as '$t', not '... $2'" ;;
  esac
}

le32() {
  local v=$1 i
  for i in 0 1 2 3; do printf "\\$(printf %03o $(( (v >> (8 * i)) & 255 )))"; done
}

# cow_header MAGIC VALID VERSION CHUNK: a COW whose first sector holds this
# header (little-endian 32-bit fields) and zeros.
cow_header() {
  # Zero area 0 too (chunk 1 of up to 16K chunks): no stale exceptions.
  $DD if=/dev/zero of=$C bs=64K count=1 oflag=direct conv=notrunc 2>/dev/null || fail "zero $C"
  { le32 $1; le32 $2; le32 $3; le32 $4; head -c 496 /dev/zero; } > /tmp/hdr
  write_at $C 0 /tmp/hdr
}

fuzz() {  # $1 = seed, $2 = count
  awk -v seed="$1" -v n="$2" 'BEGIN {
    srand(seed);
    # Good values are repeated so that about half of the lines load.
    no = split("/dev/vdb /dev/vdb /dev/vdb /dev/vdb /dev/vdb /dev/vda /dev/vda /dev/mapper/none 253:250 /dev/vdc", org, " ");
    nc = split("/dev/vdc /dev/vdc /dev/vdc /dev/vdd /dev/vdd /dev/vdd /dev/vda /dev/mapper/none", cow, " ");
    nt = split("P P P PO N N p po n X PX Nfoo POxyz 0 -", typ, " ");
    nk = split("8 8 8 16 16 128 1024 0 0 1 2 3 4194304 -8 abc 08 99999999999 2097152", chk, " ");
    nf = split("@|@|@|@|@|@|0|1 discard_zeroes_cow|2 discard_zeroes_cow discard_passdown_origin|1 discard_passdown_origin|3 a b c|1 bogus|1|x|0 extra|2 DISCARD_ZEROES_COW discard_zeroes_cow|-1", ft, "|");
    for (i = 0; i < n; i++) {
      k = int(rand() * 12); if (k > 5) k = 5;
      line = "";
      if (k > 0) line = org[1 + int(rand() * no)];
      if (k > 1) line = line " " cow[1 + int(rand() * nc)];
      if (k > 2) line = line " " typ[1 + int(rand() * nt)];
      if (k > 3) line = line " " chk[1 + int(rand() * nk)];
      if (k > 4) { f = ft[1 + int(rand() * nf)]; if (f != "@") line = line " " f }
      # Extra chunk sizes for N: 2097152 sectors only with N
      if (line ~ / P[O]? 2097152/ || line ~ / [pP][oO]? 2097152/) sub(/ 2097152/, " 1024", line);
      print line;
    }
  }'
}

run_case() {
  M=$1
  : > /tmp/$M.bad.lines
  load_module "$M"
  wipe_cow $C
  # Names and versions (not the list order, which is registration order).
  record $M.bad.lines targets "$(dmsetup targets | grep -E '^snapshot(-origin)? ' | tr -s ' ' | sort | tr '\n' ';')"

  info "$M: argument counts"
  expect_ctr_fail bad "0 $L snapshot" "requires 4 or more arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C" "requires 4 or more arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P" "requires 4 or more arguments"

  info "$M: store types and chunk sizes (the store error is overwritten)"
  expect_ctr_fail bad "0 $L snapshot $O $C X 8" "snapshot: Couldn't create exception store"
  expect_ctr_fail bad "0 $L snapshot $O $C Q 8" "snapshot: Couldn't create exception store"
  expect_ctr_fail bad "0 $L snapshot $O $C PX 8" "Unsupported persistent store option: X"
  expect_ctr_fail bad "0 $L snapshot $O $C PX 8" "snapshot: Couldn't create exception store"
  for cs in 3 6 12 abc -8 99999999999 4194304 1x; do
    expect_ctr_fail bad "0 $L snapshot $O $C P $cs" "snapshot: Couldn't create exception store"
  done
  expect_ctr_fail bad "0 $L snapshot $O $C N 0" "snapshot: Chunk size not set"
  expect_ctr_fail bad "0 $L snapshot $O $C N 3" "snapshot: Couldn't create exception store"

  info "$M: feature groups"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 1" "Invalid number of feature arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 3 a b c" "Invalid number of feature arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 x" "Invalid number of feature arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 -1" "Invalid number of feature arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 2 discard_zeroes_cow" "Invalid number of feature arguments"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 1 bogus" "Unrecognised feature requested"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 2 discard_zeroes_cow bogus" "Unrecognised feature requested"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8 1 discard_passdown_origin" \
    "discard_passdown_origin feature depends on discard_zeroes_cow"

  info "$M: devices"
  expect_ctr_fail bad "0 $L snapshot /dev/mapper/none $C P 8" "snapshot: Cannot get origin device"
  expect_ctr_fail bad "0 $L snapshot 253:250 $C P 8" "snapshot: Cannot get origin device"
  expect_ctr_fail bad "0 $L snapshot $O /dev/mapper/none P 8" "snapshot: Cannot get COW device"
  expect_ctr_fail bad "0 $L snapshot $O $O P 8" "COW device cannot be the same as origin device"
  expect_ctr_fail bad "0 $(( $(sectors $O) + 8 )) snapshot $O $C P 8" "too small for target"

  info "$M: COW headers"
  cow_header 0x58585858 1 1 8          # "XXXX"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8" "Invalid or corrupt snapshot"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8" "snapshot: Failed to read snapshot metadata"
  cow_header 0x70416e53 1 2 8          # version 2
  expect_ctr_fail bad "0 $L snapshot $O $C P 8" "unable to handle snapshot disk version 2"
  expect_ctr_fail bad "0 $L snapshot $O $C P 8" "snapshot: Failed to read snapshot metadata"
  cow_header 0x70416e53 1 1 3          # chunk size 3
  expect_ctr_fail bad "0 $L snapshot $O $C P 8" "invalid on-disk chunk size 3: Chunk size is not a power of 2."
  # Legal headers: the on-disk chunk size wins; valid=0 loads as Invalid.
  cow_header 0x70416e53 1 1 16
  dmesg -c > /dev/null
  expect_ok "snapshot $O $C P 8"
  dmesg | grep -q "chunk size 16 in device metadata overrides table chunk size of 8." || fail "no override message"
  cow_header 0x70416e53 1 1 16
  expect_ok "snapshot $O $C P 0"
  cow_header 0x70416e53 0 1 16
  dmesg -c > /dev/null
  expect_ok "snapshot $O $C P 16"
  dmesg | grep -q "Snapshot is marked invalid." || fail "no 'marked invalid' message"
  wipe_cow $C

  info "$M: accepted oddities"
  expect_ok "snapshot $O $C p 8"
  expect_ok "snapshot $O $C po 16"
  expect_ok "snapshot $O $C POxyz 8"
  expect_ok "snapshot $O $C Nfoo 8"
  expect_ok "snapshot $O $C n 2097152"
  expect_ok "snapshot $O $C N 32 0"
  expect_ok "snapshot $O $C P 8 0 extra args"
  expect_ok_discard "snapshot $O $C P 8 1 DISCARD_ZEROES_COW" "P 8 1 discard_zeroes_cow"
  expect_ok_discard "snapshot $O $C P 8 2 discard_passdown_origin discard_zeroes_cow" \
    "P 8 2 discard_zeroes_cow discard_passdown_origin"
  expect_ok_discard "snapshot $O $C P 8 2 discard_zeroes_cow discard_zeroes_cow" "P 8 1 discard_zeroes_cow"
  expect_ok "snapshot $O $C PO 0"

  info "$M: handover pairing"
  wipe_cow $C
  dmsetup create s1 --table "0 $L snapshot $O $C P 8"
  expect_ctr_fail s2 "0 $L snapshot $O $C P 8" "Unable to perform snapshot handover until source is suspended."
  record $M.bad.lines "s1 after refused handover" "$(dmsetup status s1)"
  dmsetup remove s1

  info "$M: 100 random argument lists"
  # (without the discard_zeroes_cow ones where upstream oopses on them)
  if upstream_discard_oops; then fuzz 7 100 | grep -vi discard_zeroes_cow; else fuzz 7 100; fi > /tmp/fuzz
  ok=0 bad=0
  # Accepted P tables write headers to whichever disk is the COW: start every
  # run from the same zeroed headers so both modules see the same sequence.
  for d in /dev/vda /dev/vdb /dev/vdc /dev/vdd; do wipe_cow $d; done
  while read -r args; do
    if dmsetup create fz --table "0 $L snapshot $args" 2>/dev/null; then
      ok=$((ok + 1))
      echo "ok $args | $(dmsetup table fz) | $(dmsetup status fz)" >> /tmp/$M.bad.fuzz
      dmsetup remove fz
    else
      bad=$((bad + 1))
      echo "refused $args" >> /tmp/$M.bad.fuzz
      # (a refused create leaves no device behind: dmsetup removes it)
    fi
  done < /tmp/fuzz
  info "$M: fuzz: $ok accepted, $bad refused"
  [ $((ok + bad)) = "$(wc -l < /tmp/fuzz)" ] || fail "fuzz ran $((ok + bad)) cases"
  [ -z "$(dmsetup ls | grep '^fz')" ] || fail "a refused table left a device"
  # A refused or removed table leaves nothing behind: the module unloads.
  unload_modules
}

mods=$(modules_with_target snapshot)
[ -n "$mods" ] || fail "no module provides the snapshot target"
info "modules with snapshot: $mods"
for impl in $mods; do : > /tmp/$impl.bad.fuzz; run_case $impl; done
compare_modules "$mods" bad.lines bad.fuzz

# SPDX-License-Identifier: GPL-2.0
# dmsnap check / changed / usage / dump / restore / repair on COWs written by
# the kernel: upstream's dm-snapshot.ko and this module.
#  - clean COWs check clean (exit 0), `changed` equals the chunks the
#    scenario wrote (through the origin and through the snapshot), `usage`
#    prints the status line the live target printed, dump -> restore gives
#    back the same bytes;
#  - corruptions are named with their area and slot, with exit 1;
#  - repair keeps what is consistent, and the kernel loads the result: the
#    snapshot reads as the model except for the chunks whose exceptions
#    were lost;
#  - bad input (truncated COW, COW smaller than one area, not a COW, origin
#    too small) gets a clear message and exit status, and nothing is written.
. /tests/lib.sh

OSEC=32768          # origin: 16 MiB
CSEC=16384          # COW: 8 MiB
SEED=${DMSNAP_SEED:-$(( $(date +%s) % 100000 ))}
info "seed $SEED (DMSNAP_SEED=$SEED replays it)"

# u64 DEV BYTE_OFFSET: the little-endian 64-bit value there.
u64() {
  $DD if="$1" bs=8 count=1 skip="$2" iflag=skip_bytes 2>/dev/null | od -An -t u8 | tr -d ' '
}

# poke64 DEV BYTE_OFFSET VALUE: write a little-endian 64-bit value.
poke64() {
  local v=$3 i=0 out=''
  while [ $i -lt 8 ]; do
    out="$out\\$(printf '%03o' $(( v & 255 )))"
    v=$(( v >> 8 )); i=$((i + 1))
  done
  printf "$out" > /tmp/poke
  $DD if=/tmp/poke of="$1" bs=8 seek="$2" oflag=seek_bytes conv=notrunc 2>/dev/null || fail "poke $1"
  sync
}

# copy16 DEV FROM_BYTE TO_BYTE: copy a 16-byte entry.
copy16() {
  $DD if="$1" of=/tmp/ent bs=16 count=1 skip="$2" iflag=skip_bytes 2>/dev/null
  $DD if=/tmp/ent of="$1" bs=16 seek="$3" oflag=seek_bytes conv=notrunc 2>/dev/null || fail "copy16"
  sync
}

# dmsnap_rc WANT ARGS...: run dmsnap, keep its output in /tmp/out, and
# require exit status WANT.
dmsnap_rc() {
  local want=$1 rc=0; shift
  dmsnap "$@" > /tmp/out 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat /tmp/out; fail "dmsnap $*: exit $rc, want $want"; }
}

# expect_out TEXT: /tmp/out mentions TEXT.
expect_out() {
  grep -qF "$1" /tmp/out || { cat /tmp/out; fail "output lacks '$1'"; }
}

# Writes: NW 4 KiB writes at seeded block numbers; every fifth goes to the
# snapshot instead of the origin. The model of changed chunks is the set
# of 512-byte sectors written, joined into extents of the chunk size.
NW=48
awk -v s="$SEED" -v n=$NW -v nb=$((OSEC / 8)) 'BEGIN { srand(s); for (i = 0; i < n; i++) print int(rand() * nb) }' > /tmp/blocks

# model_changed CHUNK: the changed chunk extents ("START LENGTH") in chunks.
model_changed() {
  awk -v cs="$1" '{ first = int($1 * 8 / cs); last = int(($1 * 8 + 7) / cs); for (c = first; c <= last; c++) print c }' /tmp/blocks \
    | sort -n -u | awk 'NR == 1 { s = $1; l = 1; next } $1 == s + l { l++; next } { print s, l; s = $1; l = 1 } END { if (NR) print s, l }'
}

# setup MODULE CHUNK: origin o (filled), COW c, snapshot s, snapshot-origin oo;
# the writes applied. Leaves the snapshot's image sum in $snapsum.
setup() {
  load_module "$1"
  $DD if=/dev/zero of=/dev/vdc bs=1M count=$((CSEC / 2048)) oflag=direct 2>/dev/null
  dmsetup create o --table "0 $OSEC linear /dev/vda 0"
  fill_mib /dev/mapper/o orig $((OSEC / 2048))
  dmsetup create c --table "0 $CSEC linear /dev/vdc 0"
  dmsetup create s --table "0 $OSEC snapshot /dev/mapper/o /dev/mapper/c P $2"
  dmsetup create oo --table "0 $OSEC snapshot-origin /dev/mapper/o"
  snapsum0=$(sum_at /dev/mapper/s 0 $((OSEC * 512)))
  local i=0 b
  while read -r b; do
    gen "w$SEED.$i" 4096 > /tmp/wdata
    if [ $((i % 5)) = 4 ]; then write_at /dev/mapper/s $((b * 4096)) /tmp/wdata; else write_at /dev/mapper/oo $((b * 4096)) /tmp/wdata; fi
    i=$((i + 1))
  done < /tmp/blocks
  snapsum=$(sum_at /dev/mapper/s 0 $((OSEC * 512)))
  set -- $(dmsetup status s)
  live_status="$4 $5"
  dmsetup remove oo; dmsetup remove s
}

teardown() {
  for d in oo s s2 c o cshort ctiny osmall; do dmsetup remove $d 2>/dev/null || true; done
  unload_modules
}

# ---- clean COWs from both modules -------------------------------------
for m in upstream rs; do
  for chunk in 16 1; do
    tag="$m chunk $chunk"
    setup $m $chunk
    csum=$(sum_dev /dev/mapper/c); osum=$(sum_dev /dev/mapper/o)
    dmsnap_rc 0 check /dev/mapper/c --origin /dev/mapper/o
    expect_out "check: clean"
    dmsnap_rc 0 changed --unit chunks /dev/mapper/c
    model_changed $chunk > /tmp/want
    cmp -s /tmp/out /tmp/want || { diff /tmp/want /tmp/out | head; fail "$tag: changed differs from the chunks written"; }
    # Sectors, clipped to the origin: the same set in other units.
    dmsnap_rc 0 changed --unit sectors --origin /dev/mapper/o /dev/mapper/c
    awk -v cs=$chunk '{ print $1 * cs, $2 * cs }' /tmp/want > /tmp/want.s
    cmp -s /tmp/out /tmp/want.s || fail "$tag: changed --unit sectors"
    dmsnap_rc 0 changed --format json /dev/mapper/c
    total=$(awk '{ t += $2 } END { print t }' /tmp/want.s)
    expect_out "\"total\":$total,"
    dmsnap_rc 0 usage --json /dev/mapper/c
    expect_out "\"status\": \"$live_status\""
    # dump -> restore onto a zeroed copy: header and areas come back, and
    # with the data chunks copied too, the whole COW is identical.
    dmsnap_rc 0 dump /dev/mapper/c; cp /tmp/out /tmp/dump.xml
    dmsnap_rc 0 dump --format json /dev/mapper/c; cp /tmp/out /tmp/dump.json
    $DD if=/dev/mapper/c of=/tmp/copy bs=1M iflag=direct 2>/dev/null
    $DD if=/dev/zero of=/tmp/copy bs=$((chunk * 512)) count=1 conv=notrunc 2>/dev/null
    for loc in $(sed -n 's/.*<area index="[0-9]*" location="\([0-9]*\)".*/\1/p' /tmp/dump.xml); do
      $DD if=/dev/zero of=/tmp/copy bs=$((chunk * 512)) seek=$loc count=1 conv=notrunc 2>/dev/null
    done
    [ "$(sum_file /tmp/copy)" != "$csum" ] || fail "$tag: zeroing the metadata changed nothing"
    fmt=/tmp/dump.xml; [ $chunk = 1 ] || fmt=/tmp/dump.json
    dmsnap_rc 0 restore --input $fmt --output /tmp/copy
    expect_eq "$tag: restore of dump gives the COW back" "$(sum_file /tmp/copy)" "$csum"
    # None of the above wrote to the devices.
    expect_eq "$tag: COW untouched" "$(sum_dev /dev/mapper/c)" "$csum"
    expect_eq "$tag: origin untouched" "$(sum_dev /dev/mapper/o)" "$osum"
    # The kernel still reads the snapshot as before.
    dmsetup create s --table "0 $OSEC snapshot /dev/mapper/o /dev/mapper/c P $chunk"
    expect_eq "$tag: snapshot after the tools" "$(sum_at /dev/mapper/s 0 $((OSEC * 512)))" "$snapsum"
    dmsetup remove s
    [ $m = rs ] && [ $chunk = 1 ] || teardown
  done
done

# ---- corruptions of the rs-written chunk-1 COW (epa 32, stride 33) ------
# (the last case of the loop above left o and c in place)
C=/dev/mapper/c
areas=$(grep -c '<area ' /tmp/dump.xml)
[ "$areas" -ge 4 ] || fail "want at least 4 areas, have $areas"
ent() { echo $(( (1 + $1 * 33) * 512 + $2 * 16 )); }   # byte of area $1 slot $2
lost_a=$(u64 $C $(ent 0 7))        # origin chunk of area 0 slot 7, overwritten below
lost_b=$(u64 $C $(ent 2 5))
lost_c=$(u64 $C $(ent 1 0))
poke64 $C $(( $(ent 2 5) + 8 )) 34            # area 2 slot 5 -> area 1's chunk
copy16 $C $(ent 0 3) $(ent 0 7)               # area 0 slot 7 := slot 3
poke64 $C $(( $(ent 1 0) + 8 )) 1000000000    # area 1 slot 0 -> past the COW
csum=$(sum_dev $C)
dmsnap_rc 1 check $C
expect_out "area 2 slot 5: exception origin chunk $lost_b -> COW chunk 34: exception points into snapshot metadata"
expect_out "area 0 slot 7: exception origin chunk $(u64 $C $(ent 0 3)) -> COW chunk $(u64 $C $(( $(ent 0 3) + 8 ))): duplicate exception for one origin chunk (first at area 0 slot 3)"
expect_out "area 1 slot 0: exception origin chunk $lost_c -> COW chunk 1000000000: exception points past the end of the COW device"
expect_out "check: 4 problem(s): corrupt"
# The commands that need a clean list refuse it.
dmsnap_rc 1 changed $C
dmsnap_rc 1 usage $C
dmsnap_rc 1 merge --origin /dev/mapper/o $C
expect_out "problem"
expect_eq "corrupt COW untouched" "$(sum_dev $C)" "$csum"
# The kernel refuses it too (this module validates every entry).
dmsetup create s --table "0 $OSEC snapshot /dev/mapper/o $C P 1" 2>/dev/null && fail "the module loaded a corrupt COW"

# ---- repair --------------------------------------------------------------
$DD if=/dev/zero of=/dev/vdd bs=1M count=$((CSEC / 2048)) oflag=direct 2>/dev/null
dmsnap_rc 1 repair $C --output $C
expect_out "never writes in place"
dmsnap_rc 0 repair $C --output /dev/vdd
cat /tmp/out
expect_out "dropped: area 2 slot 5"
expect_out "dropped: area 0 slot 7"
expect_out "dropped: area 1 slot 0"
expect_eq "repair left the old COW alone" "$(sum_dev $C)" "$csum"
dmsnap_rc 0 check /dev/vdd
# Expected snapshot image: the model, except the three lost exceptions,
# which now read through to the origin.
dmsetup create s --table "0 $OSEC snapshot /dev/mapper/o /dev/vdd P 1" || fail "the module refused the repaired COW"
read_at /dev/mapper/o 0 $((OSEC * 512)) > /tmp/img.origin
gen orig 1048576 > /tmp/fill1
: > /tmp/img.model; i=0; while [ $i -lt $((OSEC / 2048)) ]; do cat /tmp/fill1 >> /tmp/img.model; i=$((i + 1)); done
# The snapshot's model image also holds the writes made through the snapshot.
i=0
while read -r b; do
  [ $((i % 5)) = 4 ] && { gen "w$SEED.$i" 4096 > /tmp/wdata; patch_file /tmp/img.model $((b * 4096)) /tmp/wdata; }
  i=$((i + 1))
done < /tmp/blocks
expect_eq "model image equals the snapshot before corruption" "$(sum_file /tmp/img.model)" "$snapsum"
for l in $lost_a $lost_b $lost_c; do
  $DD if=/tmp/img.origin of=/tmp/img.model bs=512 skip=$l seek=$l count=1 conv=notrunc 2>/dev/null
done
expect_eq "repaired snapshot reads as the model minus the lost chunks" "$(sum_at /dev/mapper/s 0 $((OSEC * 512)))" "$(sum_file /tmp/img.model)"
dmsetup remove s

# ---- bad input: nothing is written ---------------------------------------
dmsnap_rc 0 dump /dev/vdd; cp /tmp/out /tmp/rdump.xml
rs_last=$(sed -n 's/.*<area index="[0-9]*" location="\([0-9]*\)".*/\1/p' /tmp/rdump.xml | tail -1)
areas=$(grep -c '<area ' /tmp/rdump.xml)
osum=$(sum_dev /dev/mapper/o)
# Truncated: the COW ends before its last area.
dmsetup create cshort --table "0 $rs_last linear /dev/vdd 0"
dmsnap_rc 1 check /dev/mapper/cshort
expect_out "area $((areas - 1)): metadata area at chunk $rs_last lies past the end of the COW"
# Smaller than one area: the header only.
dmsetup create ctiny --table "0 1 linear /dev/vdd 0"
dmsnap_rc 1 check /dev/mapper/ctiny
expect_out "area 0: metadata area at chunk 1 lies past the end of the COW"
dmsnap_rc 1 merge --origin /dev/mapper/o /dev/mapper/ctiny
# While dm devices hold vdd, an offline merge may not touch it.
dmsnap_rc 4 merge --origin /dev/mapper/o /dev/vdd
expect_out "in use"
dmsetup remove cshort; dmsetup remove ctiny
# Not a COW: zeroed, and the origin's pattern.
wipe_cow /dev/vdb
dmsnap_rc 3 check /dev/vdb
expect_out "magic is 0"
dmsnap_rc 3 check /dev/mapper/o
expect_out "not a snapshot COW store: magic"
# A truncated image file, shorter than a sector.
head -c 100 /tmp/copy > /tmp/short
dmsnap_rc 3 check /tmp/short
dmsnap_rc 4 check /tmp/does-not-exist
dmsnap_rc 64 check
# Origin too small for the exceptions: check names it, merge refuses.
dmsetup create osmall --table "0 2048 linear /dev/vda 0"
dsum=$(sum_dev /dev/vdd)
dmsnap_rc 1 check /dev/vdd --origin /dev/mapper/osmall
expect_out "origin chunk past the end of the origin"
dmsnap_rc 1 merge --origin /dev/mapper/osmall /dev/vdd
expect_out "wrong origin device?"
expect_eq "refused merge left the COW alone" "$(sum_dev /dev/vdd)" "$dsum"
expect_eq "refused merge left the origin alone" "$(sum_dev /dev/mapper/o)" "$osum"
teardown
echo "dmsnap-check: ok"

# SPDX-License-Identifier: GPL-2.0
# Crash test, the overflow cut, phase B (see crash-ovf-a.sh): after a power
# cut right after an origin write overflowed the snapshot's COW, the
# snapshot must load as `Invalid`, never as a valid snapshot whose
# overflowing chunk reads the origin's new data. The acknowledged write
# itself must be on the origin. Prints "CRASH-RESULT ok ..." or fails.
. /tests/lib.sh
read_at /dev/vdd 0 512 | tr -d '\0' | head -1 > /tmp/hdr
case "$(cat /tmp/hdr)" in
  OVFNOTE*) ;;
  *) fail "overflow cut: no OVFNOTE (phase A never reached the overflowing write)" ;;
esac
for kv in $(cat /tmp/hdr); do
  case "$kv" in *=*) eval "H_${kv%%=*}=${kv#*=}" ;; esac
done
info "notes: $(cat /tmp/hdr)"
OSEC=$((H_osz / 512)); CB=$((H_chunk * 512))
load_module "$H_impl"
dmsetup create ovf-real --table "0 $OSEC linear /dev/vda 0"
dmsetup create ovf-cow --table "0 $H_cowsec linear /dev/vdc 0"
dmsetup create ovf-snap --table "0 $OSEC snapshot /dev/mapper/ovf-real /dev/mapper/ovf-cow P $H_chunk" \
  || fail "overflow cut: the snapshot does not load after the cut"
st=$(dmsetup status ovf-snap)
info "snapshot status after the cut: $st"
o=$(sum_at /dev/mapper/ovf-real $((H_k * CB)) $CB)
expect_eq "overflow cut: origin chunk $H_k (the acknowledged overflowing write)" "$o" "$H_newsum"
case "$st" in
  *Invalid*) ;;
  *)
    k=$(sum_at /dev/mapper/ovf-snap $((H_k * CB)) $CB)
    if [ "$k" = "$H_newsum" ]; then what="reads the overflowing write's new data"
    elif [ "$k" = "$H_ksum" ]; then what="still reads its old data"
    else what="reads neither its old nor the new data"; fi
    fail "overflow cut: snapshot loads valid after its COW overflowed (status '$st'); chunk $H_k $what" ;;
esac
dmsetup remove ovf-snap
echo "CRASH-RESULT ok overflow: the snapshot loads Invalid after the cut ($st)"

# SPDX-License-Identifier: GPL-2.0
# The main job: roll a whole volume back after a bad "upgrade", with LVM2 on
# the Rust module, narrated step by step with timings and a progress bar
# while the merge runs. Every file is checked against checksums taken
# before the upgrade.
. /tests/lib.sh
export LVM_SUPPRESS_FD_WARNINGS=1
CFG='devices { filter = [ "a|^/dev/vd[ac]$|", "r|.*|" ] obtain_device_list_from_udev = 0 } activation { polling_interval = 1 }'
lvmc() { "$@" --config "$CFG"; }
t0=$(date +%s)
step() { echo; echo "[$(( $(date +%s) - t0 ))s] $*"; }
files_sum() { ( cd /mnt/root && find . -type f | sort | while read -r f; do echo "$(sum_file "$f")  $f"; done ); }

step "Loading dm-snapshot-rs (the Rust snapshot targets)"
load_module rs
dmsetup targets | grep snapshot | sed 's/^/    /'

step "Creating volume group 'vg' and a 192 MiB 'root' volume with ext4"
for d in /dev/vda /dev/vdc; do $DD if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null; done
lvmc pvcreate -y -ff /dev/vda /dev/vdc >/dev/null 2>&1
lvmc vgcreate vg /dev/vda /dev/vdc >/dev/null 2>&1
lvmc lvcreate -y -L 192M -n root vg /dev/vda >/dev/null 2>&1
mkfs.ext4 -q -F /dev/vg/root
mkdir -p /mnt/root
mount /dev/vg/root /mnt/root
mkdir -p /mnt/root/etc /mnt/root/usr/lib /mnt/root/usr/bin
# Random content: the model is the checksums taken right after writing.
rnd() { $DD if=/dev/urandom of="$1" bs=64K count="$2" 2>/dev/null; }
for i in 1 2 3 4 5 6 7 8; do rnd /mnt/root/etc/app$i.conf 1; done
for i in 1 2 3 4; do rnd /mnt/root/usr/lib/libapp$i.so $(( i * 128 )); done
for i in 1 2 3; do rnd /mnt/root/usr/bin/tool$i 16; done
sync
files_sum > /tmp/before
echo "    $(wc -l < /tmp/before) files, $(du -sk /mnt/root | cut -f1) KiB; checksums recorded"

step "Taking snapshot 'pre-upgrade' before the upgrade (lvcreate -s)"
lvmc lvcreate -y -s -L 160M -n pre-upgrade vg/root /dev/vdc >/dev/null 2>&1
dmsetup table | grep -E 'snapshot' | sed 's/^/    /'

step "The upgrade goes wrong: files rewritten, deleted, added"
rm -f /mnt/root/etc/app3.conf /mnt/root/usr/lib/libapp2.so /mnt/root/usr/bin/tool1
for i in 1 3 4; do rnd /mnt/root/usr/lib/libapp$i.so $(( i * 128 )); done
rnd /mnt/root/etc/app5.conf 1
rnd /mnt/root/usr/lib/libjunk.so 256
sync
files_sum > /tmp/after
echo "    $(diff /tmp/before /tmp/after | grep -c '^[-+][^-+]') entries of the file list changed or vanished"
lvmc lvs -o lv_name,origin,data_percent vg | sed 's/^/    /'
umount /mnt/root

step "Inspecting the snapshot's COW store with dmsnap (read-only, while it is active)"
cow=/dev/mapper/vg-pre--upgrade-cow
dmsnap check "$cow" --origin /dev/mapper/vg-root-real | sed 's/^/    /' || fail "dmsnap check: the COW is not clean"
dmsnap changed --format json "$cow" > /tmp/changed.json || fail "dmsnap changed"
dmsnap changed --unit bytes "$cow" > /tmp/changed.list
ext=$(wc -l < /tmp/changed.list)
bytes=$(awk '{ t += $2 } END { print t + 0 }' /tmp/changed.list)
echo "    dmsnap changed: $ext extents, $(( bytes / 1024 )) KiB of the volume differ from the snapshot; the first ones (byte offset, length):"
head -3 /tmp/changed.list | sed 's/^/      /'
dmsnap usage "$cow" | sed 's/^/    /'

step "Rolling back: lvconvert --merge vg/pre-upgrade (the merge runs in the kernel)"
start=$(date +%s)
lvmc lvconvert --merge -i 1 vg/pre-upgrade > /tmp/lvconvert.log 2>&1 &
lvc=$!
# Wait for the merge target to appear, then show its progress: the status
# line (allocated == metadata means done) and the target's "stats" message
# (chunks merged and left, rate, ETA; Documentation/stats.md).
n=0
until dmsetup table vg-root 2>/dev/null | grep -q snapshot-merge; do
  n=$((n + 1)); [ $n -lt 600 ] || fail "the merge did not start"
  kill -0 $lvc 2>/dev/null || break
  sleep 0.05
done
first=""
while :; do
  st=$(dmsetup status vg-root 2>/dev/null)
  case "$st" in
    *snapshot-merge*) ;;
    *) break ;;
  esac
  set -- $st
  used=${4%%/*}; meta=$5
  [ -n "$first" ] || first=$used
  stats=$(dmsetup message vg-root 0 stats 2>/dev/null) || stats=""
  [ -z "$stats" ] || last_stats=$stats
  [ "$used" = "$meta" ] && break
  rate=$(echo "$stats" | sed -n 's/.*rate_chunks_per_sec=\([0-9]*\).*/\1/p')
  eta=$(echo "$stats" | sed -n 's/.*eta_sec=\([0-9-]*\).*/\1/p')
  left=$(echo "$stats" | sed -n 's/.*remaining_chunks=\([0-9]*\).*/\1/p')
  merged=$(echo "$stats" | sed -n 's/.*merged_chunks=\([0-9]*\).*/\1/p')
  if [ -n "$left" ] && [ -n "$merged" ]; then
    done_pct=$(( merged * 100 / (merged + left + 1) ))
  else
    done_pct=$(( (first - used) * 100 / (first - meta + 1) ))
  fi
  bar=$(printf '%*s' $(( done_pct / 4 )) '' | tr ' ' '#')
  printf '    merging [%-25s] %3d%%  %s chunks left, %s chunks/s, ETA %ss\n' "$bar" "$done_pct" "${left:-?}" "${rate:-?}" "${eta:-?}"
  sleep 0.2
done
printf '    merging [%-25s] 100%%\n' "#########################"
[ -n "${last_stats:-}" ] || fail "the merge target never answered the stats message"
echo "    last stats: $last_stats"
wait $lvc || { cat /tmp/lvconvert.log; fail "lvconvert --merge failed"; }
sed 's/^/    lvconvert: /' /tmp/lvconvert.log | grep -v 'NOT backed up'
echo "    merge finished in $(( $(date +%s) - start ))s; snapshot removed by LVM"

step "Checking every file against the pre-upgrade checksums"
mount /dev/vg/root /mnt/root
files_sum > /tmp/now
umount /mnt/root
cmp /tmp/before /tmp/now || { diff /tmp/before /tmp/now; fail "files differ after the rollback"; }
e2fsck -fn /dev/vg/root >/dev/null 2>&1 || fail "fsck found errors"
echo "    all $(wc -l < /tmp/now) files identical to before the upgrade; e2fsck clean"
dmsetup table | sed 's/^/    /'

step "Done: the volume is back to its pre-upgrade state."
lvmc vgremove -ff vg >/dev/null 2>&1
unload_modules

# SPDX-License-Identifier: GPL-2.0
# Demo of what works today: the Rust snapshot-origin target in front of a
# disk, as LVM would stack it, with ext4 on top and every byte checked.
. /tests/lib.sh
t0=$(date +%s)
step() { echo; echo "[$(( $(date +%s) - t0 ))s] $*"; }

step "Loading dm-snapshot-rs (KUnit self-tests run now, see console.log)"
load_module rs
dmsetup targets | grep snapshot

step "Creating 'vol-real' (linear) and 'vol' (snapshot-origin) on /dev/vda"
size=$(sectors /dev/vda)
dmsetup create vol-real --table "0 $size linear /dev/vda 0"
dmsetup create vol --table "0 $size snapshot-origin /dev/mapper/vol-real"
dmsetup table | sed 's/^/    /'
echo "    status: '$(dmsetup status vol)'"

step "Making an ext4 filesystem on /dev/mapper/vol and writing files"
mkfs.ext4 -q -F /dev/mapper/vol
mkdir -p /mnt/vol
mount /dev/mapper/vol /mnt/vol
# The model: checksums of the data as generated, before it touches a disk.
: > /tmp/model
for i in 1 2 3 4; do
  pattern "file$i" $(( i * 262144 )) > /tmp/f
  echo "$(sum_file /tmp/f)  file$i" >> /tmp/model
  cp /tmp/f /mnt/vol/file$i
done
sed 's/^/    /' /tmp/model
umount /mnt/vol

step "Remounting and checking every file against the model"
mount /dev/mapper/vol /mnt/vol
( cd /mnt/vol && $SUM file* ) > /tmp/check
cmp /tmp/model /tmp/check || fail "file contents changed"
echo "    all files match"
umount /mnt/vol
e2fsck -fn /dev/mapper/vol >/dev/null || fail "fsck found errors"
echo "    e2fsck: clean"

step "Suspend, resume and reload of the origin"
dmsetup suspend vol; dmsetup resume vol
dmsetup reload vol --table "0 $size snapshot-origin /dev/mapper/vol-real"; dmsetup resume vol
mount /dev/mapper/vol /mnt/vol
( cd /mnt/vol && $SUM file* ) | cmp - /tmp/model || fail "contents changed across reload"
umount /mnt/vol
echo "    still identical"

step "Tearing down and unloading the module"
dmsetup remove vol; dmsetup remove vol-real
unload_modules
step "Done. Snapshots and merge are being built next (issues 3 and 4)."

#!/usr/bin/env bash
# shellcheck disable=SC2001  # sed over multi-line outputs
# SPDX-License-Identifier: GPL-2.0
# test-dkms.sh: the DKMS package (scripts/package-dkms.sh) end to end on
# Debian's stock kernel $STOCK_KVER (default 7.3.4+deb13-amd64), as a user
# installs it, in the cached trixie chroot (build-env.sh) plus a cached layer
# with dkms, initramfs-tools, lvm2 and linux-image-$STOCK_KVER (overlayfs
# over the chroot, $DMSNAP_CACHE/dkms-layer-<key>); every test run works in
# a throwaway overlay on top of both.
#
#   1. refusals: dkms/build.sh on a fake headers dir with CONFIG_RUST off,
#      and with another CONFIG_RUSTC_VERSION_TEXT, fails with its message
#   2. apt-get install ./dm-snapshot-rs-dkms_V1_all.deb: dkms status, the
#      module in updates/dkms, modinfo, `modprobe --show-depends` of
#      dm-snapshot, dm-snapshot-origin, dm-snapshot-merge, dm_snapshot
#   3. initramfs: lsinitramfs of the image built by update-initramfs holds
#      the module and the modprobe.d file
#   4. VM (skipped with DKMS_TEST_VM=0): the stock kernel boots with the
#      DKMS-installed module and modprobe.d file and kmod's modprobe; the
#      dkms-modprobe scenario (tests/vm/dkms-modprobe.sh)
#   5. upgrade to V2: dkms shows only V2, the module's version changed
#   6. apt-get remove, purge: module, modprobe.d file, cache gone; dm-snapshot
#      resolves to the kernel's drivers/md/dm-snapshot.ko again
#
# Prints `dkms-test: N passed, M failed` last; exits 1 on any failure.
# The Rust metadata is seeded from scripts/stock/rust-meta.sh's cache (the
# same dkms/build.sh --meta, same key), unless DKMS_TEST_COLD=1: then the
# package's build regenerates it (+2 min). DKMS_TEST_BREAK=1 breaks one check
# on purpose (expects a wrong module version) to show the script can fail.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
repo=$(cd "$stock_here/../.." && pwd)
T0=$(date +%s)

pass=0 nfail=0
# An unexpected exit (set -e) still ends with the summary line, naming the
# command that stopped the script, so the suite's log shows why.
finished='' err_at=''
trap 'err_at="line $LINENO: $BASH_COMMAND"' ERR
trap 'rc=$?; if [ -z "$finished" ]; then
  echo "dkms-test: FAIL: stopped at ${err_at:-an unknown command} (exit $rc)"
  echo "dkms-test: $pass passed, $((nfail + 1)) failed ($(($(date +%s) - T0))s)"; exit 1; fi' EXIT

# --- the cached layer ------------------------------------------------------
layer_pkgs=(dkms initramfs-tools lvm2 "linux-image-$kver")
layer_key=$( (echo "$stock_root"; printf '%s\n' "${layer_pkgs[@]}") | sha256sum | cut -c1-16)
layer=$cache/dkms-layer-$layer_key
mnt=$cache/dkms-test-mnt

# in_overlay UPPER LOWERDIRS CMD...: CMD in a chroot of an overlay (UPPER
# over LOWERDIRS, colon-separated), in a private mount namespace.
in_overlay() {
  local upper=$1 lowers=$2; shift 2
  mkdir -p "$upper/u" "$upper/w" "$mnt"
  # shellcheck disable=SC2016
  unshare -m --propagation private /bin/bash -c '
    set -e
    m=$1 u=$2 l=$3; shift 3
    mount -t overlay overlay -o "lowerdir=$l,upperdir=$u/u,workdir=$u/w" "$m"
    mount -t proc proc "$m/proc"
    mount --rbind /dev "$m/dev"
    mount -t tmpfs tmpfs "$m/tmp"
    for b in ${STOCK_BINDS:-}; do
      mkdir -p "$m${b#*:}"
      mount --bind "${b%%:*}" "$m${b#*:}"
    done
    exec chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"' \
    in_overlay "$mnt" "$upper" "$lowers" "$@"
}

make_layer() {
  [ -e "$layer/.complete" ] && return 0
  echo "dkms-test: building the layer $layer: ${layer_pkgs[*]}" >&2
  rm -rf "$layer"
  in_overlay "$layer" "$stock_root" apt-get -qq update >&2
  in_overlay "$layer" "$stock_root" apt-get install -y -qq --no-install-recommends \
    -t trixie-backports "${layer_pkgs[@]}" >&2
  in_overlay "$layer" "$stock_root" apt-get clean
  touch "$layer/.complete"
}

stamp() { echo "dkms-test: [$(($(date +%s) - T0))s] $*"; }
make_layer
stamp "layer ready: $layer"
[ "${1:-}" != --layer ] || { finished=1; exit 0; }

# --- checks ----------------------------------------------------------------
ok() { pass=$((pass + 1)); echo "dkms-test: PASS: $*"; }
bad() { nfail=$((nfail + 1)); echo "dkms-test: FAIL: $*"; }
# check DESC CMD...: the verdict is CMD's exit status
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# has DESC TEXT REGEX: TEXT has a line matching REGEX
has() { if grep -Eq -- "$3" <<<"$2"; then ok "$1"; else bad "$1 (no /$3/ in: $(head -c 600 <<<"$2"))"; fi; }
# apt_step NAME LOG APT-ARG...: apt-get in the overlay, timed; the log's
# tail on failure.
apt_step() {
  local name=$1 log=$2 t
  shift 2
  t=$(date +%s)
  if R apt-get "$@" > "$log" 2>&1; then
    ok "$name ($(($(date +%s) - t))s)"
  else
    bad "$name (log: $log)"; tail -30 "$log"
  fi
}
hasnt() { if grep -Eq -- "$3" <<<"$2"; then bad "$1 (/$3/ in: $(grep -E -- "$3" <<<"$2" | head -3))"; else ok "$1"; fi; }

work=$cache/dkms-test
run=$work/root                       # the throwaway overlay's upper dir
lowers="$layer/u:$stock_root"
rm -rf "$work"; mkdir -p "$work/pkgs" "$run"
R() { in_overlay "$run" "$lowers" "$@"; }
export STOCK_BINDS="$work/pkgs:/pkgs $stock_dkms:/stock/dkms"

base=$(cat "$repo/VERSION")
v1=$base+t1 v2=$base+t2
for v in "$v1" "$v2"; do OUTDIR=$work/pkgs bash "$repo/scripts/package-dkms.sh" "$v" >/dev/null; done
deb1=/pkgs/dm-snapshot-rs-dkms_${v1}_all.deb
# (ERE-quoted: 7.3.4+deb13-amd64 and 0.1.0+t1 hold '+' and '.')
# shellcheck disable=SC2001,SC2016
re() { sed 's/[][\\.+*?^$(){}|]/\\&/g' <<<"$1"; }
kre=$(re "$kver") v1re=$(re "$v1") v2re=$(re "$v2")
stamp "packages $v1 and $v2 built"

if [ -z "${DKMS_TEST_COLD:-}" ]; then
  meta=$(bash "$stock_here/rust-meta.sh")
  mkdir -p "$run/u/var/lib/dm-snapshot-rs"
  cp -al "$meta" "$run/u/var/lib/dm-snapshot-rs/"
  stamp "Rust metadata seeded from $meta"
fi

# --- 1. refusals -----------------------------------------------------------
# refuse HOW: build.sh in a scratch dir against a fake headers dir (the
# stock .config edited by the sed script HOW); prints the output, exit status.
refuse() {
  # shellcheck disable=SC2016
  R /bin/bash -c '
    h=/usr/src/linux-headers-$1 f=/tmp/fake
    mkdir -p $f /tmp/m; cp $h/.config $h/.kernelvariables $h/Module.symvers $f/
    sed -i "$2" $f/.config
    cd /tmp/m && RUSTC=$3 bash /stock/dkms/build.sh "$1" $f' refuse "$kver" "$1" "${2:-rustc}" 2>&1
}
out=$(refuse 's/^CONFIG_RUST=y$/# CONFIG_RUST is not set/') && rc=0 || rc=$?
check "refusal: CONFIG_RUST off fails (exit $rc)" test "$rc" -ne 0
has "refusal: CONFIG_RUST off says why" "$out" "refusing: kernel $kre was built without CONFIG_RUST"
echo "$out" | sed 's/^/    /'
out=$(refuse 's/^CONFIG_RUSTC_VERSION_TEXT=.*/CONFIG_RUSTC_VERSION_TEXT="rustc 1.99.0 (fake 2030-01-01)"/') && rc=0 || rc=$?
check "refusal: other CONFIG_RUSTC_VERSION_TEXT fails (exit $rc)" test "$rc" -ne 0
has "refusal: rustc mismatch says why" "$out" "refusing: .rustc --version. is 'rustc 1.85.1 .*', but kernel $kre was built by 'rustc 1.99.0"
echo "$out" | sed 's/^/    /'
# A user's rustc that is not the kernel's (a fake rustc 1.90.0): names trixie's.
# shellcheck disable=SC2016
out=$(R /bin/bash -c 'printf "#!/bin/sh\necho \"rustc 1.90.0 (1159e78c4 2025-09-14)\"\n" > /tmp/rustc; chmod +x /tmp/rustc
  mkdir /tmp/m; cd /tmp/m && RUSTC=/tmp/rustc bash /stock/dkms/build.sh "$1" /usr/src/linux-headers-$1' refuse "$kver" 2>&1) && rc=0 || rc=$?
check "refusal: a rustc 1.90.0 fails (exit $rc)" test "$rc" -ne 0
has "refusal: names trixie's rustc 1.85.1" "$out" "trixie's rustc 1.85.1\+dfsg1-1\+deb13u1"
echo "$out" | sed 's/^/    /'
stamp "stage refusals done"

# --- 2. install v1 -----------------------------------------------------------
apt_step "apt-get install $deb1" "$work/install-v1.log" install -y --no-install-recommends "$deb1"
{ grep -E "dm-snapshot-rs|Error|rror!|Signing|Building|Installing" "$work/install-v1.log" || true; } | head -20 | sed 's/^/    /'
st=$(R dkms status 2>&1 || true)
has "dkms status: $v1 installed for $kver" "$st" "^dm-snapshot-rs/$v1re, $kre, [^:]*: installed"
ls_upd=$(R ls "/lib/modules/$kver/updates/dkms/" 2>&1 || true)
has "module in /lib/modules/$kver/updates/dkms/" "$ls_upd" '^dm-snapshot-rs\.ko(\.xz|\.zst|\.gz)?$'
mi=$(R modinfo -k "$kver" dm_snapshot_rs 2>&1 || true)
has "modinfo: filename in updates/dkms" "$mi" "^filename: +/(usr/)?lib/modules/$kre/updates/dkms/dm-snapshot-rs\.ko"
has "modinfo: version $v1" "$mi" "^version: +$v1re\$"
has "modinfo: vermagic $kver" "$mi" "^vermagic: +$kre SMP preempt mod_unload"
has "modinfo: aliases" "$mi" "^alias: +dm-snapshot-merge\$"
{ grep -E '^(filename|version|vermagic|sig_id|signer|srcversion):' <<<"$mi" || true; } | sed 's/^/    /'
# dm-snapshot and dm_snapshot: the install rule, ours first, the kernel's
# as the fallback; the target aliases: ours among the candidates.
for n in dm-snapshot dm_snapshot; do
  sd=$(R modprobe -S "$kver" --show-depends "$n" 2>&1 || true)
  has "modprobe --show-depends $n -> install rule, dm_snapshot_rs first" "$sd" "^install /sbin/modprobe --ignore-install dm_snapshot_rs .*\|\| /sbin/modprobe --ignore-install dm_snapshot "
done
for n in dm-snapshot-origin dm-snapshot-merge; do
  sd=$(R modprobe -S "$kver" --show-depends "$n" 2>&1 || true)
  has "modprobe --show-depends $n -> updates/dkms/dm-snapshot-rs.ko" "$sd" "^insmod /(usr/)?lib/modules/$kre/updates/dkms/dm-snapshot-rs\.ko"
done
echo "$sd" | sed 's/^/    /'
stamp "stage install v1 done"

# --- 3. initramfs ------------------------------------------------------------
lsi=$(R lsinitramfs "/boot/initrd.img-$kver" 2>&1 || true)
has "initramfs: our module" "$lsi" "lib/modules/$kre/updates/dkms/dm-snapshot-rs\.ko"
has "initramfs: /etc/modprobe.d/dm-snapshot-rs.conf" "$lsi" '^etc/modprobe.d/dm-snapshot-rs\.conf$'
has "initramfs: lvm2 (its hook)" "$lsi" 'sbin/lvm$'
echo "    initramfs dm modules: $(grep -E '/dm-(snapshot|bufio|mod)[^/]*\.ko' <<<"$lsi" | sed 's|.*/||' | paste -sd' ')"
stamp "stage initramfs done"

# --- 4. VM: the stock kernel with the DKMS-installed module -----------------
m=$(R ls "/lib/modules/$kver/updates/dkms/" 2>/dev/null | grep -m1 '^dm-snapshot-rs\.ko' || true)
if [ "${DKMS_TEST_VM:-1}" != 0 ] && [ -z "$m" ]; then
  bad "VM: skipped, the package installed no module"
elif [ "${DKMS_TEST_VM:-1}" != 0 ]; then
  t=$(date +%s)
  skd=$(bash "$repo/scripts/stock/vm-kernel.sh" "$kver")
  kd=$work/kdir
  mkdir -p "$kd"
  cp -a "$skd"/{arch,drivers,vm-base-modules,vm-modroot,kernelrelease} "$kd/"
  upd=$kd/vm-modroot/lib/modules/$kver/updates/dkms
  mkdir -p "$upd" "$kd/vm-modroot/etc/modprobe.d"
  # What the package installed in the chroot ($m), as it is (.ko.xz, DKMS-signed).
  R cat "/lib/modules/$kver/updates/dkms/$m" > "$upd/$m"
  R cat /etc/modprobe.d/dm-snapshot-rs.conf > "$kd/vm-modroot/etc/modprobe.d/dm-snapshot-rs.conf"
  depmod -b "$kd/vm-modroot" "$kver"
  ko=$work/dm-snapshot-rs.ko           # run.sh's /modules copy (unused)
  f=$(ls "$upd"/dm-snapshot-rs.ko*)
  case $f in *.xz) xz -dc "$f" > "$ko" ;; *) cp "$f" "$ko" ;; esac
  if VM_KMOD=1 VM_QUIET=${VM_QUIET:-1} SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600} \
      bash "$repo/scripts/vm/run.sh" "$kd" "$ko" "$work/vm" dkms-modprobe > "$work/vm.log" 2>&1; then
    ok "VM: dkms-modprobe on $kver ($(($(date +%s) - t))s)"
  else
    bad "VM: dkms-modprobe on $kver (logs: $work/vm/)"; tail -40 "$work/vm/results.log" 2>/dev/null || cat "$work/vm.log"
  fi
  { grep -E '^-- |FAIL' "$work/vm/results.log" 2>/dev/null || true; } | sed 's/^/    /' | head -30
  stamp "stage VM done"
fi

# --- 5. upgrade to v2 ---------------------------------------------------------
apt_step "upgrade: apt-get install v2 over v1" "$work/install-v2.log" \
  install -y --no-install-recommends "/pkgs/dm-snapshot-rs-dkms_${v2}_all.deb"
st=$(R dkms status 2>&1 || true)
echo "$st" | sed 's/^/    /'
has "upgrade: dkms status: $v2 installed" "$st" "^dm-snapshot-rs/$v2re, $kre, [^:]*: installed"
hasnt "upgrade: dkms status: no $v1 left" "$st" "^dm-snapshot-rs/$v1re"
mi=$(R modinfo -k "$kver" -F version dm_snapshot_rs 2>&1 || true)
want=$v2
[ -z "${DKMS_TEST_BREAK:-}" ] || want=$v1       # broken on purpose
check "upgrade: the module's version is now $want (modinfo: $mi)" test "$mi" = "$want"
check "upgrade: /usr/src/dm-snapshot-rs-$v1 gone" R test ! -e "/usr/src/dm-snapshot-rs-$v1"
lsi=$(R lsinitramfs "/boot/initrd.img-$kver" 2>&1 || true)
has "upgrade: initramfs still has the module" "$lsi" "lib/modules/$kre/updates/dkms/dm-snapshot-rs\\.ko"
stamp "stage upgrade done"

# --- 6. removal and purge -----------------------------------------------------
apt_step "apt-get remove" "$work/remove.log" remove -y dm-snapshot-rs-dkms
ls_upd=$(R ls -A "/lib/modules/$kver/updates/dkms/" 2>&1 || true)
hasnt "remove: no module in updates/dkms" "$ls_upd" '^dm-snapshot-rs'
check "remove: /etc/modprobe.d/dm-snapshot-rs.conf gone" R test ! -e /etc/modprobe.d/dm-snapshot-rs.conf
check "remove: the initramfs hook gone" R test ! -e /usr/share/initramfs-tools/hooks/dm-snapshot-rs
st=$(R dkms status 2>&1 || true)
hasnt "remove: dkms status has no dm-snapshot-rs" "$st" 'dm-snapshot-rs'
for n in dm-snapshot dm_snapshot; do
  sd=$(R modprobe -S "$kver" --show-depends "$n" 2>&1 || true)
  has "remove: modprobe --show-depends $n -> the kernel's dm-snapshot.ko" "$(tail -1 <<<"$sd")" "^insmod /(usr/)?lib/modules/$kre/kernel/drivers/md/dm-snapshot\\.ko"
done
echo "$sd" | sed 's/^/    /'
lsi=$(R lsinitramfs "/boot/initrd.img-$kver" 2>&1 || true)
hasnt "remove: initramfs without our module" "$lsi" 'dm-snapshot-rs'
echo "    initramfs dm modules: $(grep -E '/dm-(snapshot|bufio|mod)[^/]*\.ko' <<<"$lsi" | sed 's|.*/||' | paste -sd' ')"
check "remove: the Rust metadata cache kept until purge" R test -d /var/lib/dm-snapshot-rs
apt_step "apt-get purge" "$work/purge.log" purge -y dm-snapshot-rs-dkms
check "purge: /var/lib/dm-snapshot-rs gone" R test ! -e /var/lib/dm-snapshot-rs
dl=$(R dpkg -l dm-snapshot-rs-dkms 2>&1 || true)
hasnt "purge: dpkg knows no dm-snapshot-rs-dkms" "$dl" '^[a-z][a-z] +dm-snapshot-rs-dkms'
stamp "stage remove/purge done"

[ -n "${DKMS_TEST_KEEP:-}" ] || rm -rf "$run"
finished=1
echo "dkms-test: $pass passed, $nfail failed ($(($(date +%s) - T0))s)"
[ "$nfail" = 0 ]

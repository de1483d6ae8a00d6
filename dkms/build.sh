#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build dm-snapshot-rs (or any out-of-tree Rust module in the current
# directory) for a Debian kernel. This is DKMS's MAKE[0] step (dkms.conf),
# run as root in the DKMS build directory; scripts/stock/ runs the very same
# script in its trixie chroot.
#
#   build.sh KERNELVER KERNEL_SOURCE_DIR          build ./*.ko (make M=$PWD)
#   build.sh --check KERNELVER KERNEL_SOURCE_DIR  only the refusals below
#   build.sh --meta KERNELVER KERNEL_SOURCE_DIR   only the Rust metadata
#                                                 (prints its directory)
#   build.sh --clean                              remove the build products
#
# Refuses, saying why and what to install: a kernel without CONFIG_RUST; a
# `rustc --version` (or `bindgen --version`) other than the kernel's
# CONFIG_RUSTC_VERSION_TEXT (CONFIG_BINDGEN_VERSION_TEXT): Rust symbol names
# embed crate hashes that depend on the exact compiler; and missing
# rust-src, bindgen, linux-source or build tools.
#
# A self-built kernel tree (KERNEL_SOURCE_DIR/rust/libkernel.rmeta exists)
# is used directly. Debian's linux-headers lack the Rust metadata
# (rust/*.rmeta, the proc-macro .so files, scripts/target.json), so it is
# regenerated from /usr/src/linux-source-X.Y.tar.xz with the headers' .config
# (`make olddefconfig`, which must leave the config unchanged, then
# `make prepare`: no vmlinux), about 2 minutes on 2 cores, and cached in
# $DMSNAP_STATE (default /var/lib/dm-snapshot-rs)/rust-meta-KVER-KEY, KEY
# hashing the kernel release, the .config, the package versions and the
# toolchain's version texts. That directory holds rust/ (the regenerated
# objects), kdir/ (a copy of the headers with the metadata overlaid: the
# `make -C` directory for M= builds), versions.
#
# After the build, every symbol the module imports (Rust ones included) must
# be in the kernel's Module.symvers, else the module would not load.
#
# Environment: JOBS (make -j, default: nproc), DMSNAP_STATE,
# DMSNAP_LINUX_SOURCE (the source tarball), DMSNAP_KEEP_BUILD=1 (keep the
# unpacked kernel tree in $DMSNAP_STATE/build-KVER), RUSTC, BINDGEN.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
me="dm-snapshot-rs"
log() { echo "$me: $*" >&2; }
die() { log "$*"; exit 1; }
RUSTC=${RUSTC:-rustc}
BINDGEN=${BINDGEN:-bindgen}
state=${DMSNAP_STATE:-/var/lib/dm-snapshot-rs}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

if [ "${1:-}" = --clean ]; then
  rm -rf .tmp_versions ./*.ko ./*.ko.* ./*.mod ./*.mod.c ./*.mod.o ./*.o \
    Module.symvers modules.order src/dm/bindings_generated.rs
  find . \( -name '*.o' -o -name '.*.cmd' -o -name '*.rmeta' -o -name '*.d' \) -delete
  exit 0
fi
mode=build
case ${1:-} in --check|--meta) mode=${1#--}; shift ;; esac
if [ $# -ne 2 ]; then
  echo "usage: $0 [--check|--meta] KERNELVER KERNEL_SOURCE_DIR | --clean" >&2
  exit 2
fi
kver=$1 ksrc=$2
cfg=$ksrc/.config

# The value of option $1 in the kernel's .config ("" if unset).
kconfig() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$cfg"; }
# dpkg's version of package $1, or "" (also off Debian).
pkgver() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || true; }

# The Debian release a kernel release like 7.3.4+deb13-amd64 belongs to.
debian_hint() {
  case $1 in
    *+deb13*) echo "Debian 13 (trixie)" ;;
    *+deb14*) echo "Debian 14 (forky)" ;;
    *+deb12*) echo "Debian 12 (bookworm)" ;;
    *) echo "the Debian release that built this kernel" ;;
  esac
}

refuse_checks() {
  [ -f "$cfg" ] || die "refusing: no $cfg: install linux-headers-$kver (the kernel's headers)"
  if [ "$(kconfig CONFIG_RUST)" != y ]; then
    die "refusing: kernel $kver was built without CONFIG_RUST, so it cannot load" \
        "Rust modules at all. Install a kernel built with CONFIG_RUST=y: Debian's 7.x" \
        "kernels have it (trixie-backports: apt-get install -t trixie-backports" \
        "linux-image-amd64 linux-headers-amd64); trixie's 6.12 kernels do not."
  fi
  local want got
  want=$(kconfig CONFIG_RUSTC_VERSION_TEXT)
  got=$("$RUSTC" --version 2>/dev/null || echo "no rustc")
  if [ "$got" != "$want" ]; then
    local hint
    hint="the rustc of $(debian_hint "$kver")"
    case $want in
      "rustc 1.85.1 "*) hint="trixie's rustc 1.85.1+dfsg1-1+deb13u1 (with rust-src of the same version): apt-get install -t trixie rustc rust-src" ;;
      "rustc 1.97.1 "*) hint="sid's rustc 1.97.1+dfsg1-1 (with rust-src of the same version): apt-get install -t unstable rustc rust-src" ;;
      *) hint="$hint and rust-src of the same version" ;;
    esac
    die "refusing: \`rustc --version\` is '$got', but kernel $kver was built by" \
        "'$want' (CONFIG_RUSTC_VERSION_TEXT). A Rust module must be compiled by" \
        "exactly the kernel's rustc: the crate hashes in every Rust symbol name depend" \
        "on it, so a module from another rustc cannot load. Install $hint."
  fi
  want=$(kconfig CONFIG_BINDGEN_VERSION_TEXT)
  got=$("$BINDGEN" --version 2>/dev/null | head -1 || true)
  if [ -z "$got" ]; then
    die "refusing: no bindgen: install the bindgen package ($want for kernel $kver;" \
        "for 7.3.x+deb13: trixie's bindgen 0.71.1-6)"
  fi
  if [ -n "$want" ] && [ "$got" != "$want" ]; then
    die "refusing: \`bindgen --version\` is '$got', but kernel $kver was built with" \
        "'$want' (CONFIG_BINDGEN_VERSION_TEXT). Install the bindgen of" \
        "$(debian_hint "$kver") that prints exactly that (7.3.x+deb13: bindgen 0.71.1-6)."
  fi
  local sysroot
  sysroot=$("$RUSTC" --print sysroot)
  [ -f "$sysroot/lib/rustlib/src/rust/library/core/src/lib.rs" ] ||
    die "refusing: the Rust standard library source is missing" \
        "($sysroot/lib/rustlib/src/rust/library): install rust-src, the same version as rustc"
  [ -e "$ksrc/rust/libkernel.rmeta" ] && return 0
  # Debian headers: the metadata is regenerated from linux-source.
  local tarball
  tarball=$(source_tarball)
  [ -f "$tarball" ] ||
    die "refusing: $tarball is missing; the headers of $kver lack the Rust" \
        "metadata, which is regenerated from the kernel's source: install" \
        "$(basename "${tarball%.tar.xz}") (the same version as linux-headers-$kver;" \
        "for 7.3.x+deb13: apt-get install -t trixie-backports linux-source-7.3)"
  local t missing=()
  for t in make bc flex bison xz python3 openssl "$(kernel_cc)"; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ -f /usr/include/libelf.h ] || missing+=(libelf-dev)
  [ -f /usr/include/openssl/opensslv.h ] || missing+=(libssl-dev)
  [ "${#missing[@]}" = 0 ] ||
    die "refusing: missing build tools: ${missing[*]} (Debian packages: make bc flex" \
        "bison xz-utils python3 openssl libelf-dev libssl-dev and the kernel's compiler" \
        "$(kernel_cc))"
}

# /usr/src/linux-source-X.Y.tar.xz for kernel X.Y.*
source_tarball() {
  local xy
  xy=$(echo "$kver" | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p')
  echo "${DMSNAP_LINUX_SOURCE:-/usr/src/linux-source-$xy.tar.xz}"
}

# The kernel's C compiler as Debian's headers record it (gcc-14 for 7.3).
kernel_cc() {
  local v
  v=$(sed -n 's/^CC = .*gcc-\([0-9][0-9]*\) *$/\1/p' "$ksrc/.kernelvariables" 2>/dev/null || true)
  if [ -n "$v" ]; then echo "gcc-$v"; else echo gcc; fi
}

# Regenerate the Rust metadata (see the header); prints the directory.
make_meta() {
  local h versions key out bld t0 t1 tarball cc
  h=$(readlink -f "$ksrc")
  tarball=$(source_tarball)
  cc=$(kernel_cc)
  versions=$(
    echo "kver=$kver"
    sha256sum < "$cfg" | sed 's/ .*//; s/^/config=/'
    dpkg-query -W "$(basename "${tarball%.tar.xz}")" "linux-headers-$kver" \
      rustc rust-src bindgen "$cc" libclang-dev 2>/dev/null || true
    [ -n "$(pkgver "$(basename "${tarball%.tar.xz}")")" ] || stat -c 'tarball=%s %Y' "$tarball"
    "$RUSTC" -vV
    "$BINDGEN" --version 2>&1 | head -1
    "$cc" --version | head -1
    echo "format=2"
  )
  key=$(printf '%s\n' "$versions" | sha256sum | cut -c1-16)
  out=$state/rust-meta-$kver-$key
  if [ -e "$out/.complete" ]; then
    echo "$out"
    return 0
  fi
  mkdir -p "$state"
  bld=$state/build-$kver
  log "regenerating the Rust metadata of $kver from $tarball (a few minutes) in $bld"
  t0=$(date +%s)
  rm -rf "$bld"; mkdir -p "$bld"
  tar -xJf "$tarball" -C "$bld" --strip-components=1
  cp "$cfg" "$bld/.config"
  # Debian's CC=gcc-14, KERNELRELEASE, ...
  [ ! -f "$ksrc/.kernelvariables" ] || cp "$ksrc/.kernelvariables" "$bld/.kernelvariables"
  local mk=(make -C "$bld" -j"$jobs")
  case $cc in gcc-*) mk+=(HOSTCC="$cc" HOSTCXX="g++-${cc#gcc-}") ;; esac
  "${mk[@]}" olddefconfig >&2
  # The config must come out exactly as the kernel's: olddefconfig recomputes
  # the toolchain version texts from the tools installed here.
  if ! diff -u <(grep -v "^#" "$cfg" | grep .) <(grep -v "^#" "$bld/.config" | grep .) >&2; then
    die "the kernel config changes under this toolchain (diff above): the compilers" \
        "here are not the ones $kver was built with (CONFIG_CC_VERSION_TEXT:" \
        "'$(kconfig CONFIG_CC_VERSION_TEXT)')"
  fi
  # In 7.x `make prepare` builds all of rust/; `make rust/` is then a no-op
  # check (and does the work on kernels where prepare does not).
  "${mk[@]}" prepare >&2
  "${mk[@]}" rust/ >&2
  t1=$(date +%s)

  local tmp=$out.tmp f kb
  rm -rf "$tmp"; mkdir -p "$tmp/rust"
  cp -a "$bld"/rust/*.o "$bld"/rust/*.rmeta "$bld"/rust/*.so "$bld"/rust/exports_*generated.h "$tmp/rust/"
  if [ -d "$bld/rust/helpers" ]; then
    mkdir -p "$tmp/rust/helpers"; cp -a "$bld"/rust/helpers/*.o "$tmp/rust/helpers/" 2>/dev/null || true
  fi
  cp -a "$bld/scripts/target.json" "$tmp/target.json"
  cp -a "$bld/include/generated/rustc_cfg" "$tmp/rustc_cfg.regenerated"
  # kdir: the headers' build dir with rust/ and scripts/target.json; scripts/
  # must be a real directory to hold target.json: a symlink farm.
  mkdir -p "$tmp/kdir"
  (cd "$h" && tar -cf - --exclude=./scripts --exclude=./tools --exclude=./Makefile .) | tar -xf - -C "$tmp/kdir"
  [ ! -e "$h/tools" ] || ln -s "$(readlink -f "$h/tools")" "$tmp/kdir/tools"
  kb=$(readlink -f "$h/scripts")
  mkdir -p "$tmp/kdir/scripts"
  for f in "$kb"/* "$kb"/.[!.]*; do
    [ -e "$f" ] || continue
    ln -s "$kb/${f##*/}" "$tmp/kdir/scripts/${f##*/}"
  done
  [ -e "$tmp/kdir/scripts/target.json" ] || cp "$tmp/target.json" "$tmp/kdir/scripts/target.json"
  if grep -q '^KBUILD_OUTPUT=' "$h/Makefile"; then
    sed "s|^KBUILD_OUTPUT=.*|KBUILD_OUTPUT=$out/kdir|" "$h/Makefile" > "$tmp/kdir/Makefile"
  else
    cp "$h/Makefile" "$tmp/kdir/Makefile"
  fi
  mkdir -p "$tmp/kdir/rust"
  cp -a "$tmp"/rust/*.rmeta "$tmp"/rust/*.so "$tmp/kdir/rust/"
  { printf '%s\n' "$versions"; echo "rust_build_seconds=$((t1 - t0))"; } > "$tmp/versions"
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
  [ -n "${DMSNAP_KEEP_BUILD:-}" ] || rm -rf "$bld"
  # Older metadata of this kernel release (other toolchain/package versions).
  for f in "$state/rust-meta-$kver-"*; do
    [ "$f" = "$out" ] || [ ! -d "$f" ] || rm -rf "$f"
  done
  log "Rust metadata for $kver built in $((t1 - t0))s: $out"
  echo "$out"
}

# One metadata build at a time (DKMS may build several kernels in a row;
# a second package manager run must not race the first).
locked_meta() {
  mkdir -p "$state"
  if command -v flock >/dev/null; then
    exec 9>"$state/.lock"
    flock 9
  fi
  make_meta
}

refuse_checks
[ "$mode" = check ] && { log "$kver: ok (CONFIG_RUST=y, $("$RUSTC" --version))"; exit 0; }

if [ -e "$ksrc/rust/libkernel.rmeta" ]; then
  [ "$mode" = meta ] && { echo "$ksrc"; exit 0; }
  kdir=$ksrc                    # a self-built kernel tree: use it as is
else
  meta=$(locked_meta)
  [ "$mode" = meta ] && { echo "$meta"; exit 0; }
  kdir=$meta/kdir
fi

# bindgen loads libclang at run time; prefer the LLVM rustc was built with.
llvm=$(kconfig CONFIG_RUSTC_LLVM_MAJOR_VERSION)
if [ -z "${LIBCLANG_PATH:-}" ] && [ -n "$llvm" ] && [ -d "/usr/lib/llvm-$llvm/lib" ]; then
  export LIBCLANG_PATH=/usr/lib/llvm-$llvm/lib
fi
symvers=$kdir/Module.symvers
[ -f "$symvers" ] || symvers=$ksrc/Module.symvers
log "building $PWD for $kver with $("$RUSTC" --version)"
rm -f ./*.ko
blog=$(mktemp)
trap 'rm -f "$blog"' EXIT
set +e
make -C "$kdir" M="$PWD" -j"$jobs" modules 2>&1 | tee "$blog"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || die "the build for $kver failed (make exit $rc)"
if grep -E 'undefined!|^ERROR' "$blog" >&2; then
  die "modpost reported undefined symbols (above)"
fi
# The modules this build made (modules.order), not other .ko files lying in
# the tree (a developer's tree keeps builds for other kernels under out/).
mapfile -t kos < <(sed -n 's/\.o$/.ko/p' modules.order 2>/dev/null)
[ "${#kos[@]}" -gt 0 ] || die "no .ko produced"
for ko in "${kos[@]}"; do
  bash "$here/check-symbols.sh" "$ko" "$symvers" ||
    die "$ko imports symbols that kernel $kver does not export (above): it would not load"
done
log "built for $kver: ${kos[*]}"

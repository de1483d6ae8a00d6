#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# build-module.sh SRC_DIR [MAKE_ARG...]
#
# Build the out-of-tree module in SRC_DIR (a Kbuild/Makefile dir, as for
# `make M=`) for Debian's unmodified stock kernel $STOCK_KVER
# (default 7.3.4+deb13-amd64), in the trixie chroot (build-env.sh), against
# the stock headers overlaid with the regenerated Rust metadata
# (rust-meta.sh), by dkms/build.sh (the DKMS package's build step) run in
# the chroot.  SRC_DIR is copied (without .git, target/ and out/) to
# $DMSNAP_CACHE/stock-modules/<name>, built there, and every produced .ko is
# checked with check-symbols.sh against the headers' Module.symvers.  Fails
# on a build error, on a modpost "undefined!" / "WARNING" line, on any
# compiler warning (unless STOCK_ALLOW_WARNINGS=1) or on a missing symbol.
# Prints the .ko path(s).  JOBS=N (default 2) for make -j.
#
# E.g. the real module, once it compiles on 7.3:
#   scripts/stock/build-module.sh /work/main
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 SRC_DIR [MAKE_ARG...]" >&2
  exit 2
fi
src=$(cd "$1" && pwd); shift
name=$(basename "$src")

meta=$(bash "$stock_here/rust-meta.sh")
work=$cache/stock-modules/$name
rm -rf "$work"; mkdir -p "$work"
tar -C "$src" --exclude=./.git --exclude=./target --exclude=./out -cf - . | tar -C "$work" -xf -

log=$work.log
t0=$(date +%s)
# The build is dkms/build.sh's (the DKMS package's MAKE step): refusals,
# the cached metadata (rust-meta.sh above), make M=, check-symbols.sh.
export STOCK_BINDS="$stock_state:/var/lib/dm-snapshot-rs $stock_dkms:/stock/dkms $work:/stock/M"
# shellcheck disable=SC2016
if ! in_chroot /bin/bash -c '
    set -euo pipefail
    cd /stock/M
    bash /stock/dkms/build.sh --clean
    JOBS=$1 bash /stock/dkms/build.sh "$2" "$3"
  ' build-module "${JOBS:-2}" "$kver" "$hdr" > "$log" 2>&1; then
  cat "$log" >&2
  echo "build-module: build of $src for $kver failed (log: $log)" >&2
  exit 1
fi
t1=$(date +%s)
cat "$log" >&2
if grep -E 'undefined!|^WARNING|^ERROR' "$log" >&2; then
  echo "build-module: modpost reported problems (above)" >&2
  exit 1
fi
# Zero warnings, as scripts/build-module.sh (STOCK_ALLOW_WARNINGS=1: report only).
nwarn=$(grep -E -i -c '(^|[^a-z_])warning[:\[]' "$log" || true)
if [ "$nwarn" -ne 0 ]; then
  grep -E -i '(^|[^a-z_])warning[:\[]' "$log" >&2
  if [ -z "${STOCK_ALLOW_WARNINGS:-}" ]; then
    echo "build-module: $nwarn warning lines (above; STOCK_ALLOW_WARNINGS=1 to accept)" >&2
    exit 1
  fi
  echo "build-module: $nwarn warning lines accepted (STOCK_ALLOW_WARNINGS)" >&2
fi

mapfile -t kos < <(find "$work" -name '*.ko' | sort)
if [ "${#kos[@]}" -eq 0 ]; then
  echo "build-module: no .ko produced in $work" >&2
  exit 1
fi
# (dkms/build.sh checked the imports; the summary again, on the host.)
for ko in "${kos[@]}"; do
  bash "$stock_here/check-symbols.sh" "$ko" "$meta/kdir/Module.symvers" >&2
done
echo "build-module: built in $((t1 - t0))s for $kver: ${kos[*]}" >&2
printf '%s\n' "${kos[@]}"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Fetch packages of other Debian releases (sid, trixie, trixie-backports)
# without touching the host's apt sources: a private apt configuration under
# $DMSNAP_CACHE/apt, pointed at the same mirror as the host's own sources.
#
#   debian-pkg.sh download PKG...   download PKG (exact names) into the cache;
#                                   prints each .deb's path
#   debian-pkg.sh version PKG       the candidate version of PKG
#   debian-pkg.sh extract PKG DIR   download PKG and unpack it into DIR
#   debian-pkg.sh mirror            the Debian mirror the host's sources use
#
# Package lists are refreshed once a day (DEBIAN_PKG_REFRESH=1 forces it).
set -euo pipefail
cache=${DMSNAP_CACHE:-/var/cache/dm-snapshot-rs}
d=$cache/apt
mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs"

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    sed -n -e 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' -e 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\(http[^ ]*debian\)\/* .*/\2/p' |
    grep -v security | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
if [ "${1:-}" = mirror ]; then
  echo "$mirror"
  exit 0
fi
printf 'deb [trusted=yes] %s %s main\n' "$mirror" sid "$mirror" trixie "$mirror" trixie-backports > "$d/sources.list"

O=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$d/lists"
   -o "Dir::Cache=$d/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)

stamp=$d/lists/.refreshed
if [ "${DEBIAN_PKG_REFRESH:-}" ] || [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
  apt-get "${O[@]}" -qq update >&2
  touch "$stamp"
fi

download() {
  local p f
  for p in "$@"; do
    f=$(ls "$d/debs/${p}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$f" ]; then
      (cd "$d/debs" && apt-get "${O[@]}" -qq download "$p" >&2)
      f=$(ls "$d/debs/${p}_"*.deb | head -1)
    fi
    echo "$f"
  done
}

case ${1:-} in
  download) shift; download "$@" ;;
  version) apt-cache "${O[@]}" policy "$2" | sed -n 's/^  Candidate: //p' ;;
  extract) f=$(download "$2"); mkdir -p "$3"; dpkg-deb -x "$f" "$3"; echo "$f" ;;
  *) echo "usage: $0 download PKG... | version PKG | extract PKG DIR" >&2; exit 2 ;;
esac

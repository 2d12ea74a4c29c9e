#!/usr/bin/env bash
# Installs ci/apt-packages.txt (the one list of what the build and the tests
# need) when something on it is missing. Sourced or run by ci/test and
# ci/build-iso; .ci/run reaches it through ci/test.
#
# Today's machine image ships qemu-utils from bookworm-backports while its apt
# sources list only bookworm, so a plain install of qemu-system-x86 fails on
# "qemu-utils : Breaks: qemu-system-common". When the installed qemu-utils has
# no candidate of its own version, the install pins it to the release the
# sources do carry (--allow-downgrades), see ../shared/ENVIRONMENT.md.
set -euo pipefail
list="$(dirname "${BASH_SOURCE[0]}")/../apt-packages.txt"
mapfile -t pkgs < <(grep -v '^\s*#' "$list" | grep -v '^\s*$' | awk '{print $1}')
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} = 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages of ci/apt-packages.txt present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root or apt-get install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
extra=()
# An installed package whose version no configured source offers (a backport on
# an image whose sources lack backports) breaks its siblings: pin it back.
for p in qemu-utils; do
  inst=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
  [ -n "$inst" ] || continue
  if ! apt-cache madison "$p" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -qxF "$inst"; then

    cand=$(apt-cache madison "$p" | awk -F'|' 'NR==1 {gsub(/ /,"",$2); print $2}')
    if [ -n "$cand" ]; then
      echo "install-deps: $p $inst has no source here; installing $cand alongside"
      extra+=("$p=$cand")
    fi
  fi
done
if ! apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" "${extra[@]}"; then
  still=()
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || still+=("$p")
  done
  echo "install-deps: could not install: ${still[*]}" >&2
  exit 1
fi

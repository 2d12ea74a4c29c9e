#!/usr/bin/env bash
# newer-kernel.sh CACHE_DIR: prints the path of a real Debian kernel package
# newer than the one the payload installs (the payload takes the suite's
# linux-image-amd64; this takes the same suite's backports kernel), fetched
# once into CACHE_DIR/kernel with apt from the build host's own Debian
# mirror (its apt sources; signatures checked by apt against the host's
# keyring) and reused afterwards. For ci/qemu-e2e's kernel-update boots.
set -euo pipefail
cache=$1/kernel
mkdir -p "$cache"
found=$(ls "$cache"/linux-image-*.deb 2>/dev/null | head -1 || true)
if [ -n "$found" ] && dpkg-deb -I "$found" >/dev/null 2>&1; then
  echo "$found"
  exit 0
fi
. /etc/os-release
codename=${VERSION_CODENAME:?}
# The host's Debian mirror: the URI of the sources entry for the codename.
uri=$(python3 - "$codename" <<'PY'
import glob, re, sys
code = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        f = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            f[k.strip().lower()] = v.split()
        if code in f.get("suites", []) and "deb" in f.get("types", []):
            print(f["uris"][0]); sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m and m.group(3) == code:
            print(m.group(2)); sys.exit(0)
sys.exit("no apt source for " + code + " on this host")
PY
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "deb $uri $codename-backports main" > "$tmp/sources.list"
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/none"
      -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -q update >&2
# The backports metapackage names the kernel (e.g. linux-image-6.12.95+deb12-amd64).
pkg=$(apt-cache "${opts[@]}" depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "newer-kernel.sh: no backports kernel for $codename at $uri" >&2; exit 1; }
(cd "$cache" && apt-get "${opts[@]}" -q download "$pkg" >&2)
ls "$cache"/linux-image-*.deb | head -1

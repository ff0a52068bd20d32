#!/usr/bin/env bash
# Proves a repaired mx8 wheel works where libjpeg, libpng and libcurl are not installed: in a
# minimal Debian 12 root filesystem (debootstrap --variant=minbase + python3, python3-venv,
# ca-certificates), it installs torch==2.13.0, pillow and the wheel into a fresh venv with
# pip alone, runs scripts/wheel_smoke.py (pack, resolve, one decoded DataLoader epoch,
# `import mx8.leases`, `mx8 --help`) from a directory outside any source tree, and prints the
# `ldd` of the installed mx8/_core*.so, which must resolve to mx8.libs/ or the rootfs's glibc.
#
# Why: on the build machine the system libraries are always there, so a wheel that silently
# still needs them would pass every local test. The rootfs is checked for their absence first.
#
# Usage:  scripts/check_wheel_bare.sh WHEEL      (as root: debootstrap, mount, chroot)
#         scripts/check_wheel_bare.sh "$(scripts/build_wheel.sh | tail -1)"
# The last line is "check_wheel_bare: PASS" or "check_wheel_bare: FAIL ..." (exit status 0/1).
#
# The rootfs is made once and reused: <repo>/.cache/bare-rootfs (delete it to start over).
# pip inside it reaches the host's indexes: the host's pip configuration files and PIP_*
# variables are copied in with the CA bundle they name, and local index/wheel folders are
# bind-mounted read-only.
#
# Environment:
#   MX8_BARE_ROOTFS=DIR     the cached rootfs (default <repo>/.cache/bare-rootfs)
#   MX8_DEBIAN_MIRROR=URL   debootstrap mirror (default http://deb.debian.org/debian)
#   MX8_BARE_BINDS="DIR ..." host folders pip reads, bind-mounted at the same path
#                           (default: /opt/wheels /opt/pypi /opt/pypi-more, those that exist)
#   MX8_BARE_PIP="SPEC ..." what is installed with the wheel (default "torch==2.13.0 pillow")
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ $# -eq 1 && -f "$1" ]] || { echo "usage: $0 WHEEL" >&2; exit 2; }
whl="$(realpath "$1")"
rootfs="${MX8_BARE_ROOTFS:-$repo/.cache/bare-rootfs}"
mirror="${MX8_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
binds="${MX8_BARE_BINDS:-/opt/wheels /opt/pypi /opt/pypi-more}"
read -ra pip_specs <<<"${MX8_BARE_PIP:-torch==2.13.0 pillow}"
venv=/opt/mx8-venv          # inside the rootfs
work=/tmp/mx8-check         # inside the rootfs
say() { echo "[bare $((SECONDS))s] $*"; }

unmount_all() {  # everything mounted under the rootfs, deepest first (also stale ones)
  awk -v r="$rootfs/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}
finish() {
  local rc=$?
  unmount_all || true
  if ((rc == 0)); then echo "check_wheel_bare: PASS ($(basename "$whl"), ${SECONDS}s)"
  else echo "check_wheel_bare: FAIL (exit $rc; see above)"; fi
}
trap finish EXIT
[[ $(id -u) -eq 0 ]] || { echo "needs root (debootstrap, mount, chroot)" >&2; exit 1; }
unmount_all   # left over from a run that was killed

# -- 1. the rootfs (cached) -------------------------------------------------------------
if [[ ! -f "$rootfs/.mx8-bare-rootfs" ]]; then
  command -v debootstrap >/dev/null || {
    say "apt: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  say "debootstrap bookworm (minbase + python3 python3-venv ca-certificates) -> $rootfs"
  rm -rf "$rootfs.partial"
  mkdir -p "$(dirname "$rootfs")"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs.partial" "$mirror" >"$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log"; exit 1; }
  chroot "$rootfs.partial" apt-get clean
  date -u >"$rootfs.partial/.mx8-bare-rootfs"
  rm -rf "$rootfs" && mv "$rootfs.partial" "$rootfs"
else
  say "reusing $rootfs (made $(cat "$rootfs/.mx8-bare-rootfs"))"
fi

# -- 2. the libraries the wheel vendors must be absent -----------------------------------
rm -rf "$rootfs$venv" "$rootfs$work"   # a fresh venv each run (and no pillow.libs in the find)
found="$( { chroot "$rootfs" ldconfig -p | grep -E 'lib(jpeg|png|curl)' || true
           find "$rootfs" -xdev \( -name 'libjpeg*' -o -name 'libpng*' -o -name 'libcurl*' \) -print; } )"
if [[ -n "$found" ]]; then echo "rootfs is not bare, it has:"; echo "$found"; exit 1; fi
say "rootfs has no libjpeg*, libpng*, libcurl* (ldconfig -p, find); python $(chroot "$rootfs" python3 -V 2>&1)"

# -- 3. mounts and pip configuration ----------------------------------------------------
mount -t proc proc "$rootfs/proc"
mount --rbind /dev "$rootfs/dev"
mount --make-rslave "$rootfs/dev"   # so unmounting it never propagates to the host's /dev
for d in $binds; do
  [[ -d "$d" ]] || continue
  mkdir -p "$rootfs$d"
  mount --bind "$d" "$rootfs$d"
  mount -o remount,bind,ro "$rootfs$d"
done
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip"; do
  if [[ -e "$f" ]]; then mkdir -p "$rootfs$(dirname "$f")" && cp -a "$f" "$rootfs$(dirname "$f")/"; fi
done
mapfile -t pip_env < <(env | grep '^PIP_' || true)
# ... and the CA bundle pip is told to trust (it may hold a proxy's CA the rootfs lacks)
for c in ${PIP_CERT:-} $(sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' \
                         /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" 2>/dev/null); do
  if [[ -f "$c" ]]; then mkdir -p "$rootfs$(dirname "$c")" && cp -L "$c" "$rootfs$c"; fi
done
in_root() {  # run a command in the rootfs with a clean environment (+ the host's PIP_*)
  chroot "$rootfs" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    "${pip_env[@]}" "$@"
}

# -- 4. venv, pip install, smoke test ---------------------------------------------------
mkdir -p "$rootfs$work/run"
cp "$whl" "$repo/scripts/wheel_smoke.py" "$rootfs$work/"
say "venv $venv; pip install ${pip_specs[*]} $(basename "$whl")"
in_root python3 -m venv "$venv"
in_root "$venv/bin/pip" install -q "${pip_specs[@]}" "$work/$(basename "$whl")" 2>&1 |
  { grep -v 'is ignored: it is neither a file nor a directory' || true; }   # pip's status counts
in_root "$venv/bin/python" -W ignore -c 'import mx8' || { echo "mx8 does not import (see above)"; exit 1; }
say "wheel_smoke.py (cwd $work/run)"
in_root /bin/sh -c "cd $work/run && $venv/bin/python -W ignore $work/wheel_smoke.py"

# -- 5. where _core's libraries come from ---------------------------------------------------
say "ldd of the installed mx8/_core*.so:"
ldd_out="$(in_root /bin/sh -c "ldd $venv/lib/python3*/site-packages/mx8/_core*.so")"
echo "$ldd_out"
bad="$(grep -vE '/mx8\.libs/|=> /(usr/)?lib/[^/]+-linux-gnu/lib(c|m|z|resolv|pthread|dl|rt)\.so|linux-vdso|ld-linux' <<<"$ldd_out" || true)"
[[ -z "$bad" ]] || { echo "resolved from outside mx8.libs and glibc/zlib:"; echo "$bad"; exit 1; }
for lib in libjpeg libpng16 libcurl libcrypto; do
  grep -qE "^\s*$lib-[0-9a-f]{8}\..* => \S*/mx8\.libs/" <<<"$ldd_out" ||
    { echo "$lib does not resolve to mx8.libs"; exit 1; }
done
say "every library resolves to mx8.libs/ or the rootfs's glibc/zlib"

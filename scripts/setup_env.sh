#!/usr/bin/env bash
# mx8 development environment, from a bare Debian 12 machine to a working `.venv`:
#   1. system packages (apt), only when one is missing: the C build's libraries, the raw
#      TurboJPEG probe, valgrind, gcc/make, clang + libFuzzer (scripts/fuzz.sh), libfuse2 and
#      Ceph's radosgw + ceph-mon + ceph-osd (test servers);
#   2. `.venv` at the repo root, made with the system python3;
#   3. torch==2.13.0 (pinned: a looser requirement makes pip fetch a multi-GB CUDA build),
#      then the test dependencies, then mx8 itself as an editable install, which builds the
#      extension mx8/_core*.so in place, so tests, scripts and `mx8` all import one copy.
#
# Run it (./scripts/setup_env.sh) or source it (. scripts/setup_env.sh: also activates .venv).
# A second run is fast: apt is skipped when `dpkg-query` shows every package installed, pip
# when a stamp in .venv matches a hash of csrc/, setup.py, pyproject.toml and the build
# settings. Any change there rebuilds the extension.
#
# Environment:
#   MX8_WERROR=1|0        compiler warnings are errors (default 1, as in CI)
#   MX8_SETUP_FORCE=1     reinstall and rebuild even when the stamp matches
#   MX8_PYTHON=python3    the interpreter .venv is made from
#   MX8_VENV=DIR          the venv (default: <repo>/.venv)

_mx8_setup() (
  set -euo pipefail
  local repo venv py t0 werror
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="${MX8_VENV:-$repo/.venv}"
  py="${MX8_PYTHON:-python3}"
  werror="${MX8_WERROR:-1}"
  t0=$SECONDS
  say() { echo "[setup] $*"; }
  cd "$repo"

  # -- 1. system packages -------------------------------------------------------------
  local pkgs=(gcc make pkg-config libjpeg62-turbo-dev libpng-dev libcurl4-openssl-dev
              libssl-dev libturbojpeg0-dev valgrind ca-certificates clang libclang-rt-dev
              libfuse2     # tests/hung_mount.py (fusepy), a FUSE mount whose reads hang
              radosgw ceph-mon ceph-osd)  # tests/radosgw_server.py: Ceph's S3 gateway on a one-node cluster
  # A bare debian:bookworm has no python3; a python:3.11 image or pyenv brings its own.
  if ! command -v "$py" >/dev/null 2>&1; then
    pkgs+=(python3 python3-venv python3-dev)
  elif ! "$py" -c 'import ensurepip, sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    pkgs+=(python3-venv python3-dev)
  fi
  local missing=() p
  for p in "${pkgs[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
      command -v sudo >/dev/null || { echo "[setup] need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
      sudo=(sudo)
    fi
    say "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "apt: all ${#pkgs[@]} packages present"
  fi

  # -- 2. virtualenv --------------------------------------------------------------------
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    say "venv: $venv ($("$venv/bin/python" -V 2>&1))"
  else
    say "venv: creating $venv with $(command -v "$py") ($("$py" -V 2>&1))"
    rm -rf "$venv"
    "$py" -m venv "$venv"
  fi
  local vpy="$venv/bin/python"

  # -- 3. pip: torch, test deps, mx8 (editable) ----------------------------------------------
  # psutil: the benchmarks' memory sampling (benchmarks/child.py), not the tests'
  local test_deps=(pytest pillow numpy scikit-image botocore "moto[server]" boto3 fusepy psutil "torchdata==0.11.0")
  local want
  want="$( {
      echo "werror=$werror python=$("$vpy" -c 'import sys; print(sys.version)')"
      echo "deps=${test_deps[*]}"
      find csrc -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z | xargs -0 sha256sum
      sha256sum setup.py pyproject.toml
    } | sha256sum | cut -d' ' -f1)"
  local stamp="$venv/.mx8-setup-stamp"
  # The stamp is trusted only if what it vouches for is still there (someone may have run
  # `pip uninstall` or `git clean`): torch at the pin, and the extension next to the package.
  if [[ "${MX8_SETUP_FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
     "$vpy" - "$repo" <<'EOF'
import glob, importlib.metadata as md, importlib.util, os, sys
assert md.version("torch").split("+")[0] == "2.13.0"
for d in ("pytest", "pillow", "numpy"):
    md.version(d)
spec = importlib.util.find_spec("mx8")
pkg = os.path.dirname(spec.origin)
assert os.path.realpath(pkg) == os.path.realpath(os.path.join(sys.argv[1], "mx8")), pkg
assert glob.glob(os.path.join(pkg, "_core.*.so"))
EOF
  then
    say "pip: up to date (torch 2.13.0, mx8 editable, extension built)"
  else
    rm -f "$stamp"
    pip_install() {  # quiet, minus the warnings about this machine's empty local index dirs
      "$vpy" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
    }
    if [[ "$("$vpy" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null)" != 2.13.0* ]]; then
      say "pip: torch==2.13.0"
      pip_install torch==2.13.0
    fi
    say "pip: build tools and test deps (${test_deps[*]})"
    pip_install "setuptools>=64" wheel "${test_deps[@]}"
    say "pip: mx8 (editable; building mx8._core, MX8_WERROR=$werror)"
    # Unlink the old extension first: setuptools would rewrite it in place, under any
    # process that has it mapped (a test run in another shell) and crash it.
    rm -f mx8/_core.*.so
    # No build isolation: the venv's setuptools builds (no download); deps are installed above.
    if ! MX8_WERROR="$werror" pip_install --no-build-isolation --no-deps -e . ; then
      echo "[setup] building mx8 failed (see the compiler output above)" >&2
      exit 1
    fi
    "$vpy" -c 'import mx8._core' || { echo "[setup] mx8._core does not import after the build" >&2; exit 1; }
    echo "$want" >"$stamp"
  fi
  say "ready in $((SECONDS - t0))s: $venv"
)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # sourced: set up, then activate the venv in the caller's shell
  if _mx8_setup; then
    # shellcheck disable=SC1091
    source "${MX8_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}/bin/activate"
  else
    return 1
  fi
else
  _mx8_setup
fi

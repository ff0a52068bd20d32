#!/usr/bin/env bash
# The full test run (what CI runs through .ci/run):
#   1. scripts/setup_env.sh      system packages, .venv, torch, mx8 built with MX8_WERROR=1
#   2. make -C tests/c test      the C core's unit tests under ASan + UBSan
#   3. wheel                     scripts/build_wheel.sh builds the wheel users get (auditwheel-
#                                repaired: it carries its C libraries) into dist/, and installs it
#                                with its [test] extra into a fresh virtualenv, .venv-wheel
#   4. pytest tests/             the Python suite against that installed wheel, run from outside
#                                the source tree so its mx8/ cannot shadow the install (conftest
#                                checks); "no tests collected" is a failure
#   4b. pytest benchmarks/      the benchmarks package and `mx8 bench` (its timing loop) in .venv,
#                                from the repository root: harness, reports, each entry point
#                                end to end on a 17-image corpus (~15 s)
#   5. scripts/valgrind_check.py memcheck of a small pack + Dataset run; fails on definitely
#                                lost leaks or invalid accesses whose stack involves mx8._core
#   6. scripts/fuzz.sh           libFuzzer targets (manifest, S3 XML, SigV4, JPEG/PNG decode)
#                                under ASan+UBSan: replays every kept crasher, then fuzzes each
#                                for MX8_FUZZ_SECONDS (default 20)
# Every step runs even if an earlier one failed (after a successful setup); the exit status is
# non-zero if any failed, and a summary lists each step.
#
# Environment: MX8_TEST_SKIP="c valgrind" skips steps by name (c, wheel, pytest, bench, valgrind, fuzz);
# MX8_TEST_EDITABLE=1 runs pytest against the developer's editable .venv instead of the wheel
# (quicker while iterating: no wheel build); PYTEST_ADDOPTS passes options to pytest (e.g.
# PYTEST_ADDOPTS="-k pack -x").
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export MX8_WERROR="${MX8_WERROR:-1}"

./scripts/setup_env.sh
PY="$REPO/.venv/bin/python"

declare -a SUMMARY=()
FAILED=0
record() {  # record NAME STATUS DETAIL
  SUMMARY+=("$(printf '%-10s %-6s %s' "$1" "$2" "$3")")
  [[ "$2" == ok || "$2" == skip ]] || FAILED=1
}
skipped() { [[ " ${MX8_TEST_SKIP:-} " == *" $1 "* ]]; }
step() { echo; echo "=== [test] $* ==="; }

# -- 2. C unit tests (ASan/UBSan) ---------------------------------------------------------
if skipped c; then
  record c skip "MX8_TEST_SKIP"
elif [[ -f tests/c/Makefile ]]; then
  step "C core tests: make -C tests/c test (ASan+UBSan)"
  t=$SECONDS
  if make -C tests/c test; then
    record c ok "make -C tests/c test ($((SECONDS - t))s)"
  else
    record c FAIL "make -C tests/c test exited non-zero"
  fi
else
  record c skip "tests/c/Makefile not present"
fi

# -- 3. the wheel, installed into a fresh virtualenv ------------------------------------
TEST_PY="$PY"   # the interpreter pytest runs under: the wheel's venv, or .venv if editable
if [[ "${MX8_TEST_EDITABLE:-0}" == 1 ]] || skipped wheel; then
  record wheel skip "$([[ "${MX8_TEST_EDITABLE:-0}" == 1 ]] && echo MX8_TEST_EDITABLE=1 || echo MX8_TEST_SKIP)"
else
  step "wheel: scripts/build_wheel.sh, then a fresh .venv-wheel with torch==2.13.0 and mx8[test]"
  t=$SECONDS
  WVENV="$REPO/.venv-wheel"
  pip_wheel_venv() {  # quiet, minus the warnings about this machine's empty local index dirs
    "$WVENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
  }
  if whl="$(./scripts/build_wheel.sh "$REPO/dist" | tail -n 1)" && [[ -f "$whl" ]] &&
     rm -rf "$WVENV" && "${MX8_PYTHON:-python3}" -m venv "$WVENV" &&
     pip_wheel_venv torch==2.13.0 && pip_wheel_venv "$whl[test]"; then
    TEST_PY="$WVENV/bin/python"
    export MX8_TEST_INSTALLED="$whl"   # conftest: mx8 must import from this install
    record wheel ok "$(basename "$whl") into .venv-wheel ($((SECONDS - t))s)"
  else
    record wheel FAIL "building or installing the wheel failed (see above); pytest runs on nothing"
    TEST_PY=""
  fi
fi

# -- 4. pytest -------------------------------------------------------------------------
if skipped pytest; then
  record pytest skip "MX8_TEST_SKIP"
elif [[ -z "$TEST_PY" ]]; then
  record pytest FAIL "no installed mx8 to test (the wheel step failed)"
else
  step "pytest tests/ ($( [[ "$TEST_PY" == "$PY" ]] && echo "editable .venv" || echo "installed wheel, .venv-wheel"))"
  t=$SECONDS
  rc=0
  # From an empty directory: `python -m` puts the working directory first on sys.path (here
  # and in the tests' torchrun children), where the source tree's mx8/ would shadow the wheel.
  # -rfEs: list failures, errors and skips (with reasons) in the short summary.
  runner_dir="$(mktemp -d)"
  (cd "$runner_dir" && MX8_REQUIRE_RADOSGW=1 "$TEST_PY" -m pytest -q -rfEs -c "$REPO/pyproject.toml" --rootdir "$REPO" "$REPO/tests") || rc=$?
  rmdir "$runner_dir" 2>/dev/null || true
  case $rc in
    0) record pytest ok "all passed ($((SECONDS - t))s)" ;;
    5) record pytest FAIL "no tests collected (exit 5): an empty suite is not a pass" ;;
    1) record pytest FAIL "tests failed (exit 1, see the summary above)" ;;
    *) record pytest FAIL "pytest exited $rc (interrupted, internal or usage error)" ;;
  esac
fi

# -- 4b. the benchmarks' tests --------------------------------------------------------------
if skipped bench; then
  record bench skip "MX8_TEST_SKIP"
else
  step "pytest benchmarks/ (the benchmarks package and mx8 bench, editable .venv)"
  t=$SECONDS
  rc=0
  "$PY" -m pytest -q -rfEs benchmarks/ || rc=$?
  case $rc in
    0) record bench ok "all passed ($((SECONDS - t))s)" ;;
    5) record bench FAIL "no tests collected (exit 5)" ;;
    *) record bench FAIL "pytest benchmarks/ exited $rc (see above)" ;;
  esac
fi

# -- 5. valgrind ----------------------------------------------------------------------
if skipped valgrind; then
  record valgrind skip "MX8_TEST_SKIP"
else
  step "valgrind memcheck of mx8._core (scripts/valgrind_check.py)"
  t=$SECONDS
  if "$PY" scripts/valgrind_check.py; then
    record valgrind ok "no definite leaks or invalid accesses in mx8._core ($((SECONDS - t))s)"
  else
    record valgrind FAIL "see the report above"
  fi
fi

# -- 6. fuzz ----------------------------------------------------------------------------
if skipped fuzz; then
  record fuzz skip "MX8_TEST_SKIP"
else
  step "fuzz: scripts/fuzz.sh (${MX8_FUZZ_SECONDS:-20}s a target)"
  t=$SECONDS
  if ./scripts/fuzz.sh; then
    record fuzz ok "regressions replayed, no new finding ($((SECONDS - t))s)"
  else
    record fuzz FAIL "see the fuzz summary above"
  fi
fi

echo
echo "=== [test] summary ==="
printf '%s\n' "${SUMMARY[@]}"
if ((FAILED)); then
  echo "[test] FAILED"
  exit 1
fi
echo "[test] OK"

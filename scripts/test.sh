#!/usr/bin/env bash
# The full test run (what CI runs through .ci/run):
#   1. scripts/setup_env.sh      system packages, .venv, torch, mx8 built with MX8_WERROR=1
#   2. make -C tests/c test      the C core's unit tests under ASan + UBSan
#   3. pytest -q tests/          the Python suite ("no tests collected" is a failure)
#   4. scripts/valgrind_check.py memcheck of a small pack + Dataset run; fails on definitely
#                                lost leaks or invalid accesses whose stack involves mx8._core
# Every step runs even if an earlier one failed (after a successful setup); the exit status is
# non-zero if any failed, and a summary lists each step.
#
# Environment: MX8_TEST_SKIP="c valgrind" skips steps by name (c, pytest, valgrind);
# PYTEST_ADDOPTS passes options to pytest (e.g. PYTEST_ADDOPTS="-k pack -x").
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

# -- 3. pytest -------------------------------------------------------------------------
if skipped pytest; then
  record pytest skip "MX8_TEST_SKIP"
else
  step "pytest -q tests/"
  t=$SECONDS
  rc=0
  # -rfEs: list failures, errors and skips (with reasons) in the short summary.
  "$PY" -m pytest -q -rfEs tests/ || rc=$?
  case $rc in
    0) record pytest ok "all passed ($((SECONDS - t))s)" ;;
    5) record pytest FAIL "no tests collected (exit 5): an empty suite is not a pass" ;;
    1) record pytest FAIL "tests failed (exit 1, see the summary above)" ;;
    *) record pytest FAIL "pytest exited $rc (interrupted, internal or usage error)" ;;
  esac
fi

# -- 4. valgrind ----------------------------------------------------------------------
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

echo
echo "=== [test] summary ==="
printf '%s\n' "${SUMMARY[@]}"
if ((FAILED)); then
  echo "[test] FAILED"
  exit 1
fi
echo "[test] OK"

#!/usr/bin/env bash
# Coverage-guided fuzzing of the C core (libFuzzer, clang, ASan + UBSan): the manifest parser,
# the S3 XML parsers, the SigV4 canonical-request builder, and JPEG/PNG decode + transform
# (tests/fuzz/fuzz_*.c).
#
#   scripts/fuzz.sh                  every target for MX8_FUZZ_SECONDS (default 20) each
#   MX8_FUZZ_SECONDS=3600 scripts/fuzz.sh fuzz_decode     a long campaign of one target
#
# Each target first replays tests/fuzz/regressions/<target>/ (every crasher or slow input
# found so far, kept for good), then fuzzes from tests/fuzz/corpus/<target>/ (the seeds) and
# its working corpus in .cache/fuzz/<target>/ (kept between runs, so campaigns add up).
# A crash, leak, UB report or an input slower than MX8_FUZZ_TIMEOUT seconds (default 10; ASan
# runs ~3x slower than the shipped build) fails the run and is written to .cache/fuzz/findings/:
# copy it into tests/fuzz/regressions/<target>/ once fixed. The last line per target gives
# its executions; the summary adds them up. Needs clang and libclang-rt-dev (Debian).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SECONDS_EACH="${MX8_FUZZ_SECONDS:-20}"
TIMEOUT="${MX8_FUZZ_TIMEOUT:-10}"
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(fuzz_manifest fuzz_s3_xml fuzz_s3_sign fuzz_decode fuzz_index)

if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
  echo "[fuzz] installing clang libclang-rt-dev"
  sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null
fi
make -s -C tests/fuzz

WORK="$REPO/.cache/fuzz"
mkdir -p "$WORK/findings"
failed=0
declare -a summary=()
for t in "${TARGETS[@]}"; do
  exe="$REPO/tests/fuzz/build/$t"
  corpus="$WORK/$t"
  mkdir -p "$corpus"
  regress=(tests/fuzz/regressions/"$t"/*)
  if [[ -e "${regress[0]}" ]]; then
    echo "=== [fuzz] $t: replaying ${#regress[@]} regression input(s)"
    if ! "$exe" -timeout="$TIMEOUT" -rss_limit_mb=2048 "${regress[@]}" >"$WORK/$t.replay.log" 2>&1; then
      tail -30 "$WORK/$t.replay.log"
      summary+=("$(printf '%-14s FAIL   a regression input fails again (%s)' "$t" "$WORK/$t.replay.log")")
      failed=1
      continue
    fi
  fi
  echo "=== [fuzz] $t: ${SECONDS_EACH}s"
  rc=0
  "$exe" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 -max_len=262144 \
         -print_final_stats=1 -artifact_prefix="$WORK/findings/$t-" \
         "$corpus" "tests/fuzz/corpus/$t" >"$WORK/$t.log" 2>&1 || rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/$t.log" | grep -o '[0-9]*$' || echo 0)"
  total_file="$WORK/$t.total"
  total=$(( $(cat "$total_file" 2>/dev/null || echo 0) + execs ))
  echo "$total" >"$total_file"
  if ((rc)); then
    tail -40 "$WORK/$t.log"
    summary+=("$(printf '%-14s FAIL   finding in %s (see %s)' "$t" "$WORK/findings" "$WORK/$t.log")")
    failed=1
  else
    summary+=("$(printf '%-14s ok     %s executions now, %s in all runs kept in %s' "$t" "$execs" "$total" "$WORK")")
  fi
done
echo
echo "=== [fuzz] summary ==="
printf '%s\n' "${summary[@]}"
exit "$failed"

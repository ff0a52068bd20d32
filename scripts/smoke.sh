#!/usr/bin/env bash
# mx8 slow gates, selected by the MX8 seed's flags (set to 1). Each flag selects the pytest
# tests carrying its marker (registered in pyproject.toml, [tool.pytest.ini_options]):
#
#   flag                              marker                 what the gate proves
#   MX8_SMOKE_TORCH_DDP               ddp_train              a small model trains under torchrun (gloo) DDP
#   MX8_SMOKE_TORCH_DDP_NODUPES       ddp_nodupes            every sample goes to exactly one rank once per epoch
#   MX8_SMOKE_TORCH_DDP_DETERMINISM   ddp_determinism        same (hash, seed, epoch, world) -> same sequences
#   MX8_SMOKE_TORCH_DDP_RESTART       ddp_restart            a killed rank restarts and resumes mid-epoch exactly once
#   MX8_SMOKE_MINIO                   minio                  S3 reads against local S3 servers (moto, radosgw); 3-minute key-rotation epochs
#   MX8_SMOKE_MINIO_PACK              minio_pack             mx8 pack / mx8-pack-s3 to and from S3
#   MX8_SMOKE_DEMO2_MINIO_SCALE       demo2_minio_scale      a larger S3 dataset end to end, bounded memory
#   MX8_SMOKE_MINIO_MANIFEST_STORE    minio_manifest_store   manifests stored in / resolved from S3, pinning
#   MX8_SMOKE_PY_VISION_PILLOW        py_vision_pillow       decoded pixels match Pillow/torchvision
#   MX8_SMOKE_WHEEL_BARE              wheel_bare             the repaired wheel works in a rootfs without the C libraries
#   MX8_SMOKE_ALL=1 selects every gate.
#
# A test joins a gate with `@pytest.mark.ddp_train` etc. The script exports the flag while the
# gate runs, so a slow test may skip itself in a plain `pytest` run. Outcome per gate:
#   PASS             tests ran and passed
#   FAIL             a test failed or errored
#   NOT IMPLEMENTED  no test carries the marker yet; not a pass
#   ALL SKIPPED      tests exist but every one skipped itself; not a pass
# Exit status: 0 when every selected gate passed (or none was selected: "no gate selected"),
# 1 when one failed, 2 when none failed but some are not implemented or all skipped.
# PYTEST_ADDOPTS passes options to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

GATES=(MX8_SMOKE_TORCH_DDP:ddp_train MX8_SMOKE_TORCH_DDP_NODUPES:ddp_nodupes
       MX8_SMOKE_TORCH_DDP_DETERMINISM:ddp_determinism MX8_SMOKE_TORCH_DDP_RESTART:ddp_restart
       MX8_SMOKE_MINIO:minio MX8_SMOKE_MINIO_PACK:minio_pack MX8_SMOKE_DEMO2_MINIO_SCALE:demo2_minio_scale
       MX8_SMOKE_MINIO_MANIFEST_STORE:minio_manifest_store MX8_SMOKE_PY_VISION_PILLOW:py_vision_pillow
       MX8_SMOKE_WHEEL_BARE:wheel_bare)

selected=()
for g in "${GATES[@]}"; do
  f="${g%%:*}"
  if [[ "${!f:-0}" == 1 || "${MX8_SMOKE_ALL:-0}" == 1 ]]; then selected+=("$g"); fi
done
if ((${#selected[@]} == 0)); then
  echo "[smoke] no gate selected. Set one or more flags to 1 (or MX8_SMOKE_ALL=1):"
  printf '  %s\n' "${GATES[@]%%:*}"
  exit 0
fi

./scripts/setup_env.sh
PY="$REPO/.venv/bin/python"

# S3 gates run against moto, started by the tests on 127.0.0.1, unless AWS_ENDPOINT_URL names
# another server (a real MinIO, say): then the Dataset gates (tests/test_s3_dataset.py) use it
# with the AWS_* credentials; client and pack tests that need moto's own controls stay on moto.
if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
  export MX8_TEST_S3_ENDPOINT="$AWS_ENDPOINT_URL"
  export MX8_TEST_S3_ACCESS_KEY="${AWS_ACCESS_KEY_ID:-minioadmin}"
  export MX8_TEST_S3_SECRET_KEY="${AWS_SECRET_ACCESS_KEY:-minioadmin}"
  export MX8_TEST_S3_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
  echo "[smoke] S3 Dataset gates against $AWS_ENDPOINT_URL"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# junit counts -> "tests failures errors skipped"
junit_counts() {
  "$PY" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
print(*t)
EOF
}

results=()
worst=0
for g in "${selected[@]}"; do
  f="${g%%:*}"
  marker="${g#*:}"
  echo
  echo "=== [smoke] gate $f (pytest -m $marker) ==="
  export "$f"=1
  # Collect first: a gate without tests is reported as such, before installing anything for it.
  rc=0
  "$PY" -m pytest --collect-only -q -m "$marker" tests/ >"$tmp/collect.txt" 2>&1 || rc=$?
  if ((rc == 5)); then
    echo "[smoke] gate $f: not implemented yet (no test is marked '$marker')"
    results+=("$(printf '%-34s NOT IMPLEMENTED  no test marked %s' "$f" "$marker")")
    if ((worst == 0)); then worst=2; fi
    continue
  elif ((rc != 0)); then
    cat "$tmp/collect.txt"
    results+=("$(printf '%-34s FAIL             collection failed (pytest exit %s)' "$f" "$rc")")
    worst=1
    continue
  fi
  if [[ "$marker" == *minio* ]] && ! "$PY" -c 'import moto, boto3' 2>/dev/null; then
    echo "[smoke] installing the S3 test server for $f: moto[server] boto3"
    "$PY" -m pip install -q --disable-pip-version-check 'moto[server]' boto3 \
      2> >(grep -v 'is ignored: it is neither' >&2)
  fi
  rc=0
  "$PY" -m pytest -q -rfEs -m "$marker" --junitxml="$tmp/$marker.xml" tests/ || rc=$?
  read -r n fails errs skips < <(junit_counts "$tmp/$marker.xml" 2>/dev/null || echo "0 0 0 0")
  if ((rc == 0 && n > 0 && skips == n)); then
    results+=("$(printf '%-34s ALL SKIPPED      %s test(s), every one skipped' "$f" "$n")")
    if ((worst == 0)); then worst=2; fi
  elif ((rc == 0)); then
    results+=("$(printf '%-34s PASS             %s passed, %s skipped' "$f" "$((n - skips))" "$skips")")
  else
    results+=("$(printf '%-34s FAIL             %s failed, %s errors of %s (pytest exit %s)' \
                "$f" "$fails" "$errs" "$n" "$rc")")
    worst=1
  fi
done

echo
echo "=== [smoke] summary ==="
printf '%s\n' "${results[@]}"
case $worst in
  0) echo "[smoke] OK" ;;
  1) echo "[smoke] FAILED" ;;
  2) echo "[smoke] INCOMPLETE: some selected gates have no tests that ran" ;;
esac
exit "$worst"

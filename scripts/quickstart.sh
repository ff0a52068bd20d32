#!/usr/bin/env bash
# mx8 in five minutes: set up the environment, make a small real-photo ImageFolder, pack it,
# and train-style stream it (decode + RandomResizedCrop 224 + flip, in mx8's C threads)
# through a torch DataLoader, printing images/s.
#
#   ./scripts/quickstart.sh            1000 images
#   MX8_QS_COUNT=5000 ./scripts/quickstart.sh
#
# The corpus (`mx8 demo-data`: crops of the real photographs scikit-image ships) and the
# packed dataset are cached under .cache/ (gitignored); a second run reuses them.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
COUNT="${MX8_QS_COUNT:-1000}"

./scripts/setup_env.sh
PY="$REPO/.venv/bin/python"

CORPUS="$REPO/.cache/quickstart-demo-$COUNT"
PACKED="$REPO/.cache/quickstart-demo-packed-$COUNT"
if [[ ! -d "$CORPUS" ]]; then
  echo "[quickstart] making $COUNT real-photo images -> $CORPUS (mx8 demo-data: scikit-image's photographs)"
  "$REPO/.venv/bin/mx8" demo-data "$CORPUS" --count "$COUNT" --classes 10
else
  echo "[quickstart] corpus: $CORPUS (cached)"
fi

if [[ ! -f "$PACKED/_mx8/manifest.tsv" ]]; then
  echo "[quickstart] packing -> $PACKED"
  "$REPO/.venv/bin/mx8" pack "$CORPUS" "$PACKED"
else
  echo "[quickstart] packed dataset: $PACKED (cached)"
fi

echo "[quickstart] streaming: mx8.Dataset(size=224, crop='random', flip=True) in DataLoader(batch_size=None)"
"$PY" - "$PACKED" <<'EOF'
import sys, time

import torch

import mx8

snap = mx8.resolve(sys.argv[1])
print(f"snapshot {snap.manifest_hash[:16]}...: {snap.samples} samples, "
      f"{len(snap.labels) if snap.labels else 0} labels")
ds = mx8.Dataset(snap, batch_size=256, size=224, crop="random", flip=True, shuffle=True)
loader = torch.utils.data.DataLoader(ds, batch_size=None)
for epoch in range(2):
    ds.set_epoch(epoch)
    n, t0, first = 0, time.perf_counter(), None
    for images, labels, sample_ids in loader:
        if first is None:
            first = time.perf_counter() - t0
            print(f"  first batch: images {tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}")
        n += images.shape[0]
    dt = time.perf_counter() - t0
    print(f"epoch {epoch}: {n} images in {dt:.2f}s = {n / dt:.0f} images/s "
          f"({ds.threads} threads, first batch after {first * 1000:.0f} ms)")
EOF

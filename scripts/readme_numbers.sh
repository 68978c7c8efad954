#!/usr/bin/env bash
# Re-measures every number in the README on this machine; results land in results/<hostname>/.
# Run from the repository root with CamVid and the highway clip in ../shared/data (see README).
# Takes about 30-40 minutes on a 2-core CPU; nothing else should run meanwhile.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-results/$(hostname)}
mkdir -p "$OUT"

# 1. Accuracy of every shipped weight (model cards), CamVid val, 360x480, single scale.
for m in $(python -c "from rtseg.zoo import shipped_names; print(' '.join(shipped_names()))"); do
  rtseg eval --model "$m" --data camvid --root "$DATA/camvid" --split val --json "$OUT/eval_$m.json" | tail -3
done
# The batch-mode figure: multi-scale + flip, reproduced from the masks `rtseg batch` writes.
rtseg eval --model deeplabv3plus_camvid --data camvid --root "$DATA/camvid" --split val \
  --scales 0.75,1,1.25 --flip --json "$OUT/eval_deeplabv3plus_camvid_tta.json" | tail -3
rtseg batch --model deeplabv3plus_camvid --source "$DATA/camvid/val" --out "$OUT/batch_val" \
  --scales 0.75,1,1.25 --flip --score-root "$DATA/camvid" --score-split val --no-overlay | tail -3

# 2. The pipeline: end-to-end vs model-only vs naive loop on the highway clip (default model, torch).
rtseg bench --pipeline --source "$DATA/video/highway_960x540_25fps.mp4" --json "$OUT/pipeline.json" --quiet

# 3. The FPS / mIoU trade-off: shipped live models x CPU backends x precisions (table, CSV, JSON, plot).
rtseg bench --root "$DATA/camvid" --video "$DATA/video/highway_960x540_25fps.mp4" --out "$OUT/bench" --quiet

#!/usr/bin/env bash
# Re-measures every number in docs/results.md on this machine; results land in results/<hostname>/.
# Run from the repository root with CamVid and the sample clip (rtseg/assets).
# Takes about 45-60 minutes on a 2-core CPU; nothing else should run meanwhile.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-results/$(hostname)}
# The dashcam clip that ships inside the package.
CLIP=$(python -c "from rtseg.assets import SAMPLE_CLIP; print(SAMPLE_CLIP)")
mkdir -p "$OUT"

# 1. Accuracy of every shipped weight (model cards), CamVid val, 360x480, single scale.
for m in $(python -c "from rtseg.zoo import shipped_names; print(' '.join(shipped_names()))"); do
  rtseg eval --model "$m" --data camvid --root "$DATA/camvid" --split val --json "$OUT/eval_$m.json" | tail -3
done
# Multi-scale + flip: the live default for comparison, then the batch model, whose figure is
# reproduced from the masks `rtseg batch` writes (its default model is the batch model).
for m in deeplabv3plus_camvid deeplabv3plus_hires_camvid; do
  rtseg eval --model "$m" --data camvid --root "$DATA/camvid" --split val \
    --scales 0.75,1,1.25 --flip --json "$OUT/eval_${m}_tta.json" | tail -3
done
rtseg batch --source "$DATA/camvid/val" --out "$OUT/batch_val" \
  --scales 0.75,1,1.25 --flip --score-root "$DATA/camvid" --score-split val --no-overlay | tail -3

# 2. The pipeline: end-to-end vs the model alone vs a naive loop on the highway clip, on the runtime
#    and precision `rtseg run` uses by default (OpenVINO INT8 on a CPU).
rtseg bench --pipeline --source "$CLIP" --json "$OUT/pipeline.json" --quiet

# 3. The FPS / mIoU trade-off: shipped live models x CPU backends x precisions (table, CSV, JSON, plot).
rtseg bench --root "$DATA/camvid" --video "$CLIP" --out "$OUT/bench" --quiet
# ... and the batch model in each CPU runtime (its card's table).
rtseg bench --models deeplabv3plus_hires_camvid --backends torch,onnxruntime,openvino --root "$DATA/camvid" \
  --video "$CLIP" --out "$OUT/bench_batch_model" --quiet

# 4. Does argmax inside the exported graph pay? Default model, INT8, with and without (model-only,
#    200 timed frames each; the logits rows include the host-side argmax).
rtseg bench --models deeplabv3plus_camvid --sizes 360x480 --backends onnxruntime,openvino --precisions int8 \
  --argmax --calib "$DATA/camvid/train" --calib-frames 64 --root "$DATA/camvid" --video none --repeats 200 \
  --out "$OUT/argmax" --quiet

# 5. The live INT8 path a user runs: calibrate on the clip itself, every frame, H.264 output
#    (with its own export cache, so that the export is built fresh and timed).
mkdir -p "$OUT/run_int8"
(cd "$OUT/run_int8" && rtseg run --source "$CLIP" --precision int8 --calib "$CLIP" --engines engines \
  --output o.mp4 --json stats.json)

# 6. Flicker and temporal smoothing (docs/results.md "Flicker"): clip TC / changed pixels / FPS, CamVid val mIoU.
python scripts/bench_smooth.py --out "$OUT/smooth" --settings off,ema:0.5,flow:0.5,flow:0.3,off --rounds 1

#!/usr/bin/env bash
# The default `rtseg run` of two checkouts on the sample clip, alternating A, B, A, B so that both
# see the same host conditions: with H.264 + masks + JSON, and with masks only. Compare the FPS of
# each pair as ratios; a checkout that measures the model alone reports it in its JSON.
# Usage: scripts/bench_pipeline_ab.sh CHECKOUT_A CHECKOUT_B OUT_DIR [PAIRS]
set -euo pipefail
a=$(realpath "$1"); b=$(realpath "$2"); out=$(mkdir -p "$3" && realpath "$3"); pairs=${4:-2}
for i in $(seq 1 "$pairs"); do
  for side in a b; do
    dir=$a; [ "$side" = b ] && dir=$b
    tmp=$(mktemp -d)
    (cd "$dir" && PYTHONPATH="$dir" python -m rtseg run --quiet --output "$tmp/o.mp4" --save-masks "$tmp/m" \
       --json "$out/${side}${i}_video.json" && \
     PYTHONPATH="$dir" python -m rtseg run --quiet --save-masks "$tmp/m2" --json "$out/${side}${i}_masks.json")
    rm -rf "$tmp"
    python - "$out/${side}${i}_video.json" "$out/${side}${i}_masks.json" "$side$i" <<'PY'
import json, sys
v, m = (json.load(open(p))["summary"] for p in sys.argv[1:3])
print(f"{sys.argv[3]}: video {v['fps']:.2f} FPS  masks {m['fps']:.2f} FPS  model alone {v.get('model_fps')}  "
      f"stage CPU ms {v.get('stage_cpu_ms')}")
PY
  done
done

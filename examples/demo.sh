#!/usr/bin/env bash
# The whole pipeline on the embedded defaults. Usage: examples/demo.sh OUTDIR
set -euo pipefail
OUT=${1:-build/demo}
BIN=.venv/bin
mkdir -p "$OUT"

echo "== 1. example models from scikit-learn's digits"
$BIN/optimize example --out "$OUT/models"

echo "== 2. quantize the digits MLP (fp32 -> int8 / fp16 ONNX), publish the best variant"
$BIN/optimize quantize "$OUT/models/mlp/model.pt" \
  --calibration-data "$OUT/models/mlp/calibration.npz" \
  --eval-data "$OUT/models/mlp/eval.npz" \
  --out "$OUT/quantized/mlp" --publish "$OUT/repository" --name digits-mlp

echo
echo "Reports: $OUT/quantized/mlp/report.md  $OUT/quantized/mlp/report.json"
echo "Model repository: $OUT/repository"

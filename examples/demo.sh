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

echo "== 3. prune the MLP (half its hidden units, 5 fine-tuning epochs), quantize it; publish if within budget"
PRUNED=no
if $BIN/optimize prune "$OUT/models/mlp/model.pt2" --ratio 0.5 --eval-data "$OUT/models/mlp/eval.npz" \
     --finetune-data "$OUT/models/mlp/calibration.npz" --epochs 5 --out "$OUT/pruned/mlp" &&
   $BIN/optimize quantize "$OUT/pruned/mlp/model.pt2" --calibration-data "$OUT/models/mlp/calibration.npz" \
     --eval-data "$OUT/models/mlp/eval.npz" --out "$OUT/pruned-quantized/mlp" \
     --publish "$OUT/repository" --name digits-mlp; then
  PRUNED=yes  # the newest version is the one served: pruned + int8
else
  echo "the pruned model misses the accuracy budget: serving the quantized-only version"
fi

# Everything below runs on a Ray cluster of its own, recorded under $OUT/state and stopped on exit.
export OPTISERVE_STATE_DIR="$OUT/state"
SLO_MS=100

echo "== 4. capacity: step load on one replica until p95 > ${SLO_MS} ms; plan replicas and cost for 200 req/s"
$BIN/loadtest capacity --repository "$OUT/repository" --model digits-mlp --slo-p95-ms $SLO_MS \
  --peak-rps 200 --step 5s --downscale-delay-s 10 --samples "$OUT/models/mlp/eval.npz" --out "$OUT/capacity"

echo "== 5. serve it with the slo autoscaling policy configured from the capacity plan"
read -r PORT GRPC_PORT <<< "$($BIN/python -c 'from optiserve.ray_cluster import free_ports; print(*free_ports(2))')"
trap '$BIN/modelserve stop >/dev/null 2>&1 || true' EXIT  # leave no server or Ray process behind
POLICY_CONFIG=(--autoscaling-config "$OUT/capacity/autoscaling.yaml")
if [ ! -f "$OUT/capacity/autoscaling.yaml" ]; then  # no load met the objective (a machine busy with other work)
  echo "(step 4 found no load within the objective, so no policy config: slo runs on its defaults)"
  POLICY_CONFIG=()
fi
$BIN/modelserve start --repository "$OUT/repository" --port "$PORT" --grpc-port "$GRPC_PORT" --autoscaling-policy slo \
  "${POLICY_CONFIG[@]}" --min-replicas 1 --max-replicas 3

# A peak of 0.9x one replica's capacity: the policy (25% headroom) wants a second replica, then drops it.
PEAK=$($BIN/python -c "import json; c = json.load(open('$OUT/capacity/capacity.json'))['curves'][0]; \
print(max(10, round(0.9 * c['capacity_rps'])))")
echo "== 6. load test: 5 req/s, a step to $PEAK req/s from 10 s to 40 s, then 5 req/s again (100 s)"
RC=0
$BIN/loadtest run --url "http://127.0.0.1:$PORT" --model digits-mlp --repository "$OUT/repository" \
  --samples "$OUT/models/mlp/eval.npz" --shape step --duration 100s --trace-param base_rps=5 \
  --trace-param peak_rps="$PEAK" --trace-param step_up_at_s=10 --trace-param step_down_at_s=40 \
  --slo-p95-ms $SLO_MS --out "$OUT/loadtest" || RC=$?
[ "$RC" -le 1 ] || exit "$RC"  # 1 = the verdict failed (reported); anything else is an error
[ "$RC" -eq 0 ] || echo "(the load test's verdict failed: see its report)"

$BIN/modelserve stop
trap - EXIT

echo "== 7. batch inference: score the held-out digits with the newest version on a pool of Ray actors (resumable)"
$BIN/modelserve batch --repository "$OUT/repository" --model digits-mlp --input "$OUT/models/mlp/eval.npz" \
  --output "$OUT/scores" --no-progress

echo
echo "Reports:"
echo "  quantization:    $OUT/quantized/mlp/report.md  $OUT/quantized/mlp/report.json"
[ "$PRUNED" = yes ] && echo "  pruning:         $OUT/pruned/mlp/report.md  $OUT/pruned-quantized/mlp/report.md"
echo "  capacity plan:   $OUT/capacity/capacity.html  $OUT/capacity/capacity.json  $OUT/capacity/autoscaling.yaml"
echo "  load test:       $OUT/loadtest/report.html  $OUT/loadtest/results.json"
echo "  batch scores:    $OUT/scores/shards  $OUT/scores/summary.json  $OUT/scores/rejects.jsonl"
echo "Model repository: $OUT/repository"

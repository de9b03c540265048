#!/bin/sh
# The main job: train lenet5 on Fashion-MNIST, quantize it with PTQ (every
# calibrator) and QAT, export int8 models, check them in the integer
# runtime and write a report. Installs what is missing and builds first.
# Usage: scripts/demo.sh [OUT_DIR]      (default: results/)
# Environment: MODEL (lenet5), EPOCHS (3), QUANT (w8a8,w4a8,w4a4), THREADS.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh build
OUT=${1:-results}
MODEL=${MODEL:-lenet5}
EPOCHS=${EPOCHS:-3}
QUANT=${QUANT:-w8a8,w4a8,w4a4}
T=${THREADS:-0}
Q=build/tools/qat
mkdir -p "$OUT"
echo "== 1/2 float training: $MODEL, $EPOCHS epochs" >&2
$Q train --model "$MODEL" --epochs "$EPOCHS" --threads "$T" --out "$OUT/$MODEL-float.h5"
echo "== 2/2 PTQ (every calibrator) and QAT at $QUANT, int8 export, report" >&2
$Q compare --from "$OUT/$MODEL-float.h5" --quant "$QUANT" --threads "$T" --out "$OUT"
echo "Report: $OUT/report.html (results.json, per-layer CSV files beside it)" >&2

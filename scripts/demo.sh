#!/usr/bin/env bash
# The whole job on the embedded default (called by `make demo` after the install):
# emulated fleet -> zoo grid -> benchmarks (splits included) -> a shared dataset -> predictors
# -> evaluation against HELP -> recommendations for the unseen board mid-1 -> decision table ->
# plots and an HTML report. Every step is resumable: rerunning skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
EA=".venv/bin/edgeatlas"
OUT="${EDGEATLAS_DEMO_OUT:-out/demo}"
# the shared datasets: $EDGEATLAS_DATASETS, else ../shared/datasets beside the checkout, else the
# lab's /work/shared/datasets (the same default as predictors/datasets.py)
DATASETS="${EDGEATLAS_DATASETS:-../shared/datasets}"
if [ -z "${EDGEATLAS_DATASETS:-}" ] && [ ! -d "$DATASETS" ] && [ -d /work/shared/datasets ]; then
  DATASETS=/work/shared/datasets
fi
# the demo's reduced measurement protocol (the same flags in every bench step: the protocol is
# part of a measurement's key)
PROTO=(--repeat 3 --number 5 --min-repeat-ms 50 --warmup-s 0.1)
TRAIN_BOARDS="little-1,little-2,big-1,edge-1"   # mid-1 (tagged holdout) stays unmeasured
UNSEEN="mid-1"
export TF_CPP_MIN_LOG_LEVEL=3 GLOG_minloglevel=3 PYTHONWARNINGS="ignore"
mkdir -p "$OUT"
start=$(date +%s)
step() { echo; echo "=== [$(($(date +%s) - start)) s] $*"; }

step "store: apply migrations"
$EA db upgrade

step "fleet: start the emulated boards of devices.toml (sshd per board in a cgroup, shaped links)"
$EA fleet up

step "fleet: the boards"
$EA fleet list

step "fleet: check every board (facts, runtimes, energy backends, clock)"
$EA fleet check

step "zoo: build the default grid (zoo.toml: ONNX + TFLite, widths, resolutions, precisions, pruning, splits)"
$EA zoo grid --config zoo.toml
$EA zoo list | tail -n 25

step "bench: every ONNX variant on the training boards ($TRAIN_BOARDS)"
$EA bench run --grid --boards "$TRAIN_BOARDS" "${PROTO[@]}"

step "bench: split points (head on the device, payload over the shaped link, tail on edge-1)"
$EA bench run --grid --splits --edge edge-1 --boards little-1,big-1 --max-splits 1 \
    --codecs fp16,int8,pca "${PROTO[@]}"

step "bench: TFLite variants in ai-edge-litert on one board"
$EA bench run --grid --runtime litert --boards big-1 "${PROTO[@]}"

if [ -d "$DATASETS/latbench" ]; then
  step "predictors: import a shared dataset (latbench: real measured latencies)"
  $EA predictors import latbench --path "$DATASETS/latbench"
else
  step "predictors: $DATASETS/latbench not found; set EDGEATLAS_DATASETS to import a shared dataset"
fi

step "predictors: train per-class latency and energy predictors on the fleet's measurements"
$EA predictors train --source probe --target latency
$EA predictors train --source probe --target energy --name fleet-energy

if [ -d "$DATASETS/help" ]; then
  step "predictors: HELP protocol (NB201, 10-shot) on HELP's evaluation devices, beside HELP's published figures"
  $EA predictors eval --dataset help-nb201 --path "$DATASETS/help" --shots 10 \
      --device titan_rtx_256,gold_6226,fpga,pixel2,raspi4,eyeriss
fi

step "bench: the probe set on the unseen board $UNSEEN (k-shot: 10 reference models, nothing else)"
$EA bench run --boards "$UNSEEN" --probe-set default "${PROTO[@]}"

for p in examples/prefs/*.toml; do
  name=$(basename "$p" .toml)
  step "recommend for the unseen board $UNSEEN under $name"
  $EA recommend --device "$UNSEEN" --edge edge-1 --bandwidth-mbit 20 --rtt-ms 20 --prefs "$p" --top 3 \
      --plot "$OUT/pareto-$name.png"
  $EA recommend --device "$UNSEEN" --edge edge-1 --bandwidth-mbit 20 --rtt-ms 20 --prefs "$p" --top 3 \
      --json > "$OUT/recommend-$name.json"
done

step "decision table: best (variant, split, codec) per network range for $UNSEEN -> edge-1"
$EA decision-table --device "$UNSEEN" --edge edge-1 --prefs examples/prefs/realtime_camera.toml \
    --plot "$OUT/decision-table.png"
$EA decision-table --device "$UNSEEN" --edge edge-1 --prefs examples/prefs/realtime_camera.toml \
    --json > "$OUT/decision-table.json"

step "report: static HTML (fleet, coverage, predictors, Pareto plots, decision tables)"
$EA report --out "$OUT/report.html" --plots "$OUT"

step "done in $(($(date +%s) - start)) s"
echo "outputs:  $OUT (report.html, pareto-*.png, decision-table.png, *.json)"
echo "store:    $($EA db status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["url"])')"
echo "fleet:    still up for you to use; stop it with: $EA fleet down"
echo "serve the HTTP API:"
echo "  export EDGEATLAS_API_TOKEN=\$(openssl rand -hex 16)"
echo "  $EA serve --host 127.0.0.1 --port 8000    # then: curl -s localhost:8000/v1/health"

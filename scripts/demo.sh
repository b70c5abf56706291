#!/usr/bin/env bash
# The whole job on the embedded default (called by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
EA=".venv/bin/edgeatlas"
OUT="${EDGEATLAS_DEMO_OUT:-out/demo}"
mkdir -p "$OUT"
step() { echo; echo "=== $*"; }
has() { $EA "$@" --help >/dev/null 2>&1; }

start=$(date +%s)
step "store: apply migrations"
$EA db upgrade

if has fleet up; then
  step "fleet: start the emulated boards of devices.toml"
  $EA fleet up
else
  step "fleet up: not built yet (issue 5, probes); listing the declared fleet only"
fi

step "fleet: the boards"
$EA fleet list

if has zoo grid; then
  step "zoo: build the default grid (zoo.toml)"
  $EA zoo grid --config zoo.toml
fi

if has bench run; then
  step "bench: benchmark the grid on the fleet (splits included)"
  $EA bench run --grid --splits --edge edge-1
fi

if has predictors import; then
  step "predictors: import a shared dataset (HELP NB201)"
  $EA predictors import help-nb201 --path ../shared/datasets/help
fi

if has predictors train; then
  step "predictors: train per-class latency and energy predictors"
  $EA predictors train
fi

if has predictors eval; then
  step "predictors: evaluate against HELP (10-shot, unseen devices)"
  $EA predictors eval --dataset help-nb201 --shots 10
fi

if has recommend; then
  for p in examples/prefs/*.toml; do
    step "recommend for the unseen board mid-1 under $(basename "$p")"
    $EA recommend --device mid-1 --edge edge-1 --bandwidth-mbit 20 --rtt-ms 20 --prefs "$p" --top 3 --plot "$OUT/pareto-$(basename "$p" .toml).png"
  done
fi

if has decision-table; then
  step "decision table over bandwidths for mid-1 -> edge-1"
  $EA decision-table --device mid-1 --edge edge-1 --prefs examples/prefs/realtime_camera.toml --plot "$OUT/decision-table.png"
fi

if has report; then
  step "report"
  $EA report --out "$OUT/report.html"
fi

end=$(date +%s)
step "done in $((end - start)) s"
echo "outputs: $OUT"
echo "store:   $($EA db status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["url"])')"
echo "serve the HTTP API:  EDGEATLAS_API_TOKEN=\$(openssl rand -hex 16) $EA serve --host 127.0.0.1 --port 8000"

#!/usr/bin/env bash
# Before the venv install: the pinned torch/torchvision are CUDA wheels on x86_64 (about 5.6 GB
# unpacked in .venv, about 7 GB with everything else), so check the free space first and say so,
# so that a pip stopping half-way with a bare "No space left on device" comes with its reason.
set -euo pipefail
need_gb="${EDGEATLAS_VENV_GB:-8}"
dir="${1:-.}"
free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
free_gb=$((free_kb / 1024 / 1024))
echo "disk: ${free_gb} GB free at $(cd "$dir" && pwd) (the venv needs about ${need_gb} GB)"
if [ "$free_gb" -lt "$need_gb" ]; then
  # a warning, not a stop: the figure is an estimate, and pip may still fit
  echo "warning: only ${free_gb} GB free on $(df -P "$dir" | awk 'NR==2 {print $6}'); the venv needs about ${need_gb} GB." >&2
  echo "If pip stops with 'No space left on device', free space (old clones, /tmp, ~/.cache/pip) and run again." >&2
fi

#!/usr/bin/env bash
# Before the venv install: the pinned torch/torchvision are CUDA wheels on x86_64 (about 5.6 GB
# unpacked in .venv, about 7 GB with everything else), so check the free space first, so that a pip
# stopping half-way with a bare "No space left on device" comes with its reason. Only ever warns:
# the figure is an estimate, and pip may still fit.
set -uo pipefail
need_gb="${EDGEATLAS_VENV_GB:-8}"
dir="${1:-.}"
if ! [[ "$need_gb" =~ ^[0-9]+$ ]]; then
  echo "disk: EDGEATLAS_VENV_GB must be a whole number of GB, got '$need_gb'; using 8" >&2
  need_gb=8
fi
# --output reads the columns by name (a source or mount point with spaces would shift -P's fields)
free_kb=$(df -k --output=avail "$dir" 2>/dev/null | tail -n 1 | tr -d ' ')
mount=$(df --output=target "$dir" 2>/dev/null | tail -n 1)
if ! [[ "$free_kb" =~ ^[0-9]+$ ]]; then
  echo "disk: could not read the free space at $dir (df failed); going on" >&2
  exit 0
fi
free_gb=$((free_kb / 1024 / 1024))
echo "disk: ${free_gb} GB free on ${mount} (the venv needs about ${need_gb} GB)"
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "warning: only ${free_gb} GB free on ${mount}; the venv needs about ${need_gb} GB." >&2
  echo "If pip stops with 'No space left on device', free space (old clones, /tmp, ~/.cache/pip) and run again." >&2
fi
exit 0

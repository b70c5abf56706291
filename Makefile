# The README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EA := $(VENV)/bin/edgeatlas
# torch/torchvision: these exact releases are the ones the lab machines hold on disk (pip finds
# them there; on x86_64 they are CUDA builds that run on the CPU, about 5.6 GB in the venv). An
# unpinned torch would download a newer multi-GB CUDA build.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install system venv demo test lint bench clean-fleet

install: system venv

system:
	@bash scripts/install-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@bash scripts/check-disk.sh .
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-cache-dir --upgrade pip
	$(PIP) install -q --no-cache-dir $(TORCH_PINS)
	$(PIP) install -q --no-cache-dir -e '.[dev]'
	@touch $@

demo: install
	@bash scripts/demo.sh

test: install
	@$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

lint: venv
	$(VENV)/bin/ruff check registry probes predictors tests bench

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-fleet:
	-$(EA) fleet down

# Two commands on a fresh machine:  make study   and   make test
# Both create .venv if missing and install the kit into it first.
#
# TORCH_SPEC picks the torch build installed before the package. The default, torch==2.13.0, is the
# local CPU wheel on the CPU-only build and CI machines; a bare "torch" or an open range would pull
# the newest multi-GB CUDA build. Override for your own machine, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= quick
BIN := $(VENV)/bin
# The stamps name what they installed: the torch stamp carries a checksum of TORCH_SPEC, so another
# spec on an existing .venv (make study TORCH_SPEC="... cu126") reinstalls torch; the kit's stamp
# follows pyproject.toml and the torch stamp.
TORCH_ID := $(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)
TORCH_STAMP := $(VENV)/.torch-$(TORCH_ID)
STAMP := $(VENV)/.studylib-installed

.PHONY: install study test lab bench screenshot audit clean-outputs

# Set-up: torch through pip (so TORCH_SPEC's pip options, and pip's own configuration, pick the
# build), then the kit and the rest through uv, which resolves and installs in parallel (uv reads
# its own settings, UV_INDEX_URL / UV_FIND_LINKS, not pip's: where it cannot reach the packages,
# pip installs them instead). Both byte-compile at install: where PYTHONDONTWRITEBYTECODE is set
# (as on the CI machines) nothing is compiled later, and every kernel and worker would compile its
# imports from source (imports took twice as long, the suite 1.6× as long).
# A torch of another spec is uninstalled first: pip takes torch==2.13.0+cpu as satisfying
# torch==2.13.0 from any index, and would keep it.
$(TORCH_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.torch-*
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m pip uninstall --quiet --yes torch
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	@touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e ".[dev]" \
	  || $(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip check
	@touch $@

install: $(STAMP)

## the main job: every study's quick profile on the embedded digits data, then the synthesis report
## (finished runs are never recomputed: a second make study only rebuilds the report). It prints a
## progress bar for the sweep, a line per finished study with its time, and the report's path.
study: $(STAMP)
	$(BIN)/studylib sweep $(PROFILE)
	$(BIN)/studylib report --profile $(PROFILE) --quiet

## the independent robustness check (after make study): the standard AutoAttack (pyautoattack: APGD-CE,
## APGD-T, FAB-T, Square) afresh on the saved checkpoints of the studies that report robust accuracy,
## on the same attacked examples at the main ε; a line per run, a table per study in outputs/audit/,
## and a failing exit status if any reported robust accuracy is overstated. CPU: about 5 min per
## adversarially trained digits model, longer for a DEQ.
AUDITED ?= adversarial synergy deq
audit: $(STAMP)
	@status=0; for s in $(AUDITED); do $(BIN)/studylib audit $$s --profile $(PROFILE) || status=1; done; exit $$status

## the whole test suite, notebooks under nbval included (smoke profile, outputs in a temp dir)
test: $(STAMP)
	$(BIN)/python -m pytest

## JupyterLab on the notebooks, with the kit's environment as the python3 kernel (--allow-root when
## run as root, as in most containers: JupyterLab refuses root otherwise)
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## speed ratios against hand-written PyTorch loops (prints them; no timed tests): the digits loop,
## then the CIFAR-10-shaped fast path (PreActResNet-18 in bf16 on a GPU; a narrow ResNet-9 on CPU),
## then the cost of the pinned CPU kernels (studylib.kernels: pinned ÷ the machine's own)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_cifar.py
	$(BIN)/python benchmarks/bench_pins.py

## the report as a reader sees it: headless Chromium (apt install chromium) renders outputs/report/
## synthesis.html, checks its sections, prompts and widgets, and writes cropped screenshots of the
## summary, the adversarial-training vs regularization table and the matrix to docs/report-*.png
screenshot: $(STAMP)
	$(BIN)/python tools/screenshot.py outputs/report/synthesis.html docs

clean-outputs:
	find outputs -mindepth 1 ! -name .gitkeep -delete

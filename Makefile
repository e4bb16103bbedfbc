# The two commands a newcomer types:  make book   and   make test
# Both create .venv and install everything on first use (torch pinned in requirements.txt).
#
# torch: on Linux, PyPI's torch==2.13.0 is the CUDA build (~2.6 GB with its nvidia-* libraries);
# macOS and Windows get a CPU build from PyPI. For the CPU wheel on Linux pass
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# TORCH_INDEX only acts when the install step runs: a fresh .venv, or requirements.txt /
# pyproject.toml newer than the install stamp. To switch an existing .venv to the CPU wheel, either
#   rm -rf .venv && make test TORCH_INDEX=https://download.pytorch.org/whl/cpu     (a clean .venv)
# or, in place (the CUDA libraries stay installed, unused):
#   .venv/bin/pip install --force-reinstall --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
MIN_PY  := 3.11
comma   := ,

.PHONY: install check-python venv test test-gpu-paths gpu-check book bench check-html clean

# A clear message instead of a failure deep inside pip: the pinned packages need Python >= 3.11.
check-python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= ($(subst .,$(comma),$(MIN_PY))) else 1)' 2>/dev/null || { \
	  echo "make: this book needs Python >= $(MIN_PY); '$(PY)' is $$($(PY) --version 2>&1 || echo 'not found')."; \
	  echo "      Install Python $(MIN_PY)+ and run e.g.  make $(MAKECMDGOALS) PY=python$(MIN_PY)"; exit 1; }

# (Re)create .venv when it is missing, half-made (an interrupted `python -m venv`: no pip) or built
# by another, too old Python. The install stamp lives inside .venv, so a rebuilt one reinstalls.
venv: check-python
	@$(PYTHON) -c 'import sys, pip; sys.exit(0 if sys.version_info >= ($(subst .,$(comma),$(MIN_PY))) else 1)' 2>/dev/null || { \
	  if [ -e $(VENV) ]; then echo "make: $(VENV) is incomplete or too old: rebuilding it"; rm -rf $(VENV); fi; \
	  echo "make: creating $(VENV) with $(PY)"; $(PY) -m venv $(VENV) || exit 1; }

# pip install -r is idempotent: an interrupted install is simply run again (the stamp is written last).
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the pinned torch from that index first
# (on Linux, PyPI's torch is the ~2.6 GB CUDA build).
TORCH_INDEX ?=
install: venv
	@if [ ! -f $(STAMP) ] || [ requirements.txt -nt $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then \
	  echo "make: installing the pinned requirements into $(VENV)"; \
	  $(PYTHON) -m pip install -q --upgrade pip && \
	  { [ -z "$(TORCH_INDEX)" ] || $(PYTHON) -m pip install -q "$$(grep -E '^torch==' requirements.txt)" --index-url "$(TORCH_INDEX)"; } && \
	  $(PYTHON) -m pip install -q -r requirements.txt && \
	  $(PYTHON) -m pip install -q --no-deps -e . && \
	  touch $(STAMP); \
	fi

# Unit tests, every chapter at profile smoke, and every chapter at the colab profile's data shapes,
# channel counts and model structure on the CPU with the smoke budget and fake MNIST files
# (tests/test_gpu_paths.py, marker colab_paths).
test: install
	$(PYTHON) -m pytest -q

# On demand (and in the workflow's scheduled run): every chapter at the gpu profile's shapes
# (CIFAR-10, 128 channels) on the CPU, with the smoke budget and fake CIFAR-10 files.
test-gpu-paths: install
	$(PYTHON) -m pytest -q -m gpu_paths

# On a CUDA machine: every chapter at colab with a short budget, the measured time per training step
# and per chapter, and each chapter's projected full colab time (scripts/gpu_check.py; <= 8 min on one
# data-centre GPU). HGB_ALLOW_CPU=1 runs it on the CPU, marked as a CPU run.
gpu-check: install
	$(PYTHON) scripts/gpu_check.py --json _build/gpu_check.json

# make bench BENCH_ARGS="--only 4 --only 5 --levers": parts 4 (training step) and 5 (evaluation) only,
# with each training lever timed alone (scripts/bench.py --help)
BENCH_ARGS ?=
bench: install
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

# make book: execute every chapter of _toc.yml with papermill at $(PROFILE), build _build/html,
# then open every page in headless Chromium (screenshots in _build/screenshots).
# PROFILE=colab or gpu needs a CUDA GPU; their cells run without a time limit.
PROFILE ?= cpu

book: install
	$(PYTHON) scripts/build_book.py --profile $(PROFILE)
	$(MAKE) --no-print-directory check-html

# Open every page in headless Chromium. In CI (CI set, not "false"/"0") a browser is required
# (Debian's chromium is installed when none is found and we are root); elsewhere, without one, the
# screenshots are skipped with a notice and only the HTML is checked (scripts/check_html.py).
check-html: install
	$(PYTHON) scripts/check_html.py

clean:
	rm -rf _build

# The two commands a newcomer types:  make book   and   make test
# Both create .venv and install everything on first use (CPU torch, pinned).
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: install test book bench check-html clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

bench: $(STAMP)
	$(PYTHON) scripts/bench.py

book: $(STAMP)
	@echo "The book pipeline is not built yet." && exit 1

clean:
	rm -rf _build

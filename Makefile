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

# make book: execute every chapter of _toc.yml with papermill at $(PROFILE), build _build/html,
# then open every page in headless Chromium (screenshots in _build/screenshots).
PROFILE ?= cpu

book: $(STAMP)
	$(PYTHON) scripts/build_book.py --profile $(PROFILE)
	$(MAKE) --no-print-directory check-html

# Installs Debian's chromium when no Chromium/Chrome is on PATH and we are root (CI containers).
check-html: $(STAMP)
	@$(PYTHON) scripts/check_html.py --find-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "check-html needs chromium: apt-get install chromium (as root) or set CHROMIUM=/path/to/chrome"; exit 1; fi; }
	$(PYTHON) scripts/check_html.py

clean:
	rm -rf _build

# Module Registration Explorer: `make run` serves, `make test` tests; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned CPU build by default. On a GPU box pass a CUDA build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
WRK := /usr/bin/wrk
REDIS := /usr/bin/redis-server
# Root in CI and containers; sudo on a workstation.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test bench bench-checkpoints lint i18n screenshots mutants clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: install
	$(BIN)/python -m app

test: install $(CHROMIUM) $(REDIS)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# Throughput against a fixed-bytes baseline, cold cost, startup, memory, page weight.
bench: install $(CHROMIUM) $(WRK) $(REDIS)
	$(BIN)/python -m bench.run

# Inspection time and peak memory for a generated checkpoint per format (GIB=1 by default).
GIB ?= 1
bench-checkpoints: install
	$(BIN)/python -m bench.checkpoints --gib $(GIB)

$(WRK):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk

# Debian's redis-server: the class tests and the bench start their own on a loopback port.
$(REDIS):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

# Debian's chromium for the browser tests (Playwright's own browser download cannot work offline).
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# After changing UI text (a template's _() or a Text("...") in app/): extract it and merge it into
# every catalog; then translate the new entries (tests/test_langs.py fails until each has Chinese).
I18N_EXTRACT := -F babel.cfg -k Text --no-location --omit-header
i18n: install
	$(BIN)/pybabel extract $(I18N_EXTRACT) -o app/locale/messages.pot .
	$(BIN)/pybabel update -i app/locale/messages.pot -d app/locale --no-fuzzy-matching --ignore-obsolete --width 110

# A CJK font, so the Chinese screenshot shows glyphs rather than boxes.
screenshots: install $(CHROMIUM)
	fc-list | grep -qi wenquanyi || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei
	$(BIN)/python -m tests.browser.screenshots

# Mutation testing of a domain package or module (minutes to an hour; not part of make test):
#   make mutants WHAT=app/classroom    make mutants WHAT=app/lab/spec.py ARGS=--show
WHAT ?= app/classroom
mutants: install $(REDIS)
	$(BIN)/python -m tests.mutants $(WHAT) $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

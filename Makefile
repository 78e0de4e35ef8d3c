# The TBAR book. `make book` and `make test` set up .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup test book bench pretrain clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[book,test]'
	rm -f $(VENV)/.installed-*
	touch $@

test: setup
	$(PY) -m pytest -q

book: setup
	$(PY) -m tbar_helpers.book

bench: setup
	$(PY) benchmarks/cost_ratio.py

pretrain: setup
	$(VENV)/bin/tbar pretrain --export

clean-cache:
	rm -rf .cache

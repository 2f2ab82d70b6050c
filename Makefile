# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := constraints.txt
# The PEFT release before the locked one, installed beside the environment: tests/estimate/test_peft_releases.py
# runs LoRA on mixtures under both, since all-linear adapts different modules in each.
PEFT_PREVIOUS := 0.21.2

.PHONY: venv demo estimate test test-latest lock lint clean

# The environment is built anew whenever pyproject.toml or the lock changes, from the lock's pins only.
$(VENV)/.installed: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(call install,$(VENV),-c $(LOCK))
	$(PY) scripts/lock.py check $(LOCK)
	touch $@

# install VENV PIP-ARGS: torch as torch==2.13.0 (unpinned, pip takes a multi-GB CUDA build), the package with its
# test tooling, LitGPT's models without their dependencies (LitGPT pins huggingface-hub < 1.4 and
# jsonargparse <= 4.41, which transformers 5 and LightningCLI outgrow; the model and LoRA code the tests build
# imports only torch and lightning), and the previous PEFT release beside the environment.
define install
	$(1)/bin/python -m pip install -q --upgrade pip $(2)
	$(1)/bin/python -m pip install -q torch==2.13.0 $(2)
	$(1)/bin/python -m pip install -q -e '.[dev]' $(2)
	$(1)/bin/python -m pip install -q --no-deps litgpt==0.5.13 $(2)
	$(1)/bin/python -m pip install -q --no-deps --target $(1)/peft-$(PEFT_PREVIOUS) peft==$(PEFT_PREVIOUS)
endef

venv: $(VENV)/.installed

# The demo: a small GPT trained on the CPU with the monitor on, then the report (about a minute).
demo: venv
	$(VENV)/bin/llmops demo

# Planning without a run: a Llama-2-7B fine-tune on one 80 GB GPU.
estimate: venv
	$(VENV)/bin/llmops estimate --model llama-2-7b --seq-len 4096 --batch-size 1 --gpu-memory 80GB

test: venv
	$(PY) -m pytest -q

# The suite on the newest releases pyproject.toml admits (no lock), in its own environment.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	$(call install,.venv-latest,)
	.venv-latest/bin/python -m pytest -q

# Rewrite the lock from a fresh resolution of pyproject.toml; run `make test` on it before committing it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	$(call install,.venv-lock,)
	.venv-lock/bin/python scripts/lock.py write $(LOCK)
	rm -rf .venv-lock

lint: venv
	$(VENV)/bin/ruff check llmops tests scripts
	$(VENV)/bin/mypy llmops

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info

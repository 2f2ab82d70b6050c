# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv demo estimate test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned: a CPU build of 2.13.0 is on these machines; unpinned pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# LitGPT's models for the tests that build them (tests/test_litgpt.py), without its dependencies: it pins
	# huggingface-hub < 1.4 and jsonargparse <= 4.41, which transformers 5 and LightningCLI here outgrow, and
	# the model and LoRA code the tests build imports only torch and lightning.
	$(PY) -m pip install -q --no-deps 'litgpt==0.5.13'
	touch $@

venv: $(VENV)/.installed

# The demo: a small GPT trained on the CPU with the monitor on, then the report (about a minute).
demo: venv
	$(VENV)/bin/llmops demo

# Planning without a run: a Llama-2-7B fine-tune on one 80 GB GPU.
estimate: venv
	$(VENV)/bin/llmops estimate --model llama-2-7b --seq-len 4096 --batch-size 1 --gpu-memory 80GB

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check llmops tests
	$(VENV)/bin/mypy llmops

clean:
	rm -rf $(VENV) build *.egg-info

# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned: a CPU build of 2.13.0 is on these machines; unpinned pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/llmops estimate --model llama-2-7b --seq-len 4096 --batch-size 1 --gpu-memory 80GB

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check llmops tests
	$(VENV)/bin/mypy llmops

clean:
	rm -rf $(VENV) build *.egg-info

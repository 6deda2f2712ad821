# Quick start: `make demo` (set up + main job on configs/demo.yaml), `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel lies on disk here; on GPU machines pass e.g. TORCH_SPEC=torch==2.14.1
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/g2u run configs/demo.yaml --report-name summary

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .g2u

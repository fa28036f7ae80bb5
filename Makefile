# The two commands:  `make demo` runs the whole system;  `make test` runs the whole suite.
# Everything else here is what those two need. Python 3.11 is the only prerequisite.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
WEB_PORT ?= 8000
SANDBOX_PORT ?= 8001
# The test run's results, which `manage.py security_review_pack` reads for its control matrix.
JUNIT_XML ?= var/junit.xml
export WEB_PORT SANDBOX_PORT

.PHONY: demo test install install-dev migrate seed lint typecheck format clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime dependencies (pinned in pyproject.toml).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Runtime + dev dependencies.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --no-input

seed: migrate
	$(BIN)/python manage.py demo_seed

## demo: install, migrate, seed, and run web + worker + beat + Cerner sandbox (Ctrl-C stops all)
demo: seed
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	$(BIN)/honcho start --procfile deploy/Procfile.demo --app-root .

## test: install dev dependencies and run lint, types and the whole suite
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	@mkdir -p $(dir $(JUNIT_XML))
	$(BIN)/pytest --junitxml=$(JUNIT_XML) $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var $(VENV) build *.egg-info

# One command per task; README, pre-commit habits and .ci/run all call these.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run migrate test lint format kafka bench console-screenshots lock clean

# constraints.txt pins every package to the versions the suite last passed with, so an upstream release cannot
# change what CI installs; `make lock` moves them to the newest releases pyproject.toml allows.
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools prints an informational wall about editable installs of a flat layout: not a problem here.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## Create .venv with the project and its dev tools.

run: install  ## Broker + API + worker on this machine, and one sample image through to done.
	$(BIN)/python -m scripts.run_local $(ARGS)

migrate: install  ## Bring the job database of DATABASE_URL to this version's schema (ARGS=--check only looks).
	$(BIN)/image-migrate $(ARGS)

test: install  ## The whole test suite against a real Kafka broker (started for you if none is given).
	$(BIN)/pytest $(ARGS)

lint: install  ## ruff and mypy, as CI runs them.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

kafka: install  ## Only a local Kafka broker on :9092, in the foreground.
	$(BIN)/image-kafka start $(ARGS)

bench: install  ## Benchmarks as ratios against limits measured in the same run (ARGS="--quick --runs 1").
	$(BIN)/python -m scripts.bench $(ARGS)

console-screenshots: install  ## Photograph every console page (desktop and phone) into docs/console, in a browser test run.
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest tests/console/test_browser.py

lock:  ## Re-resolve constraints.txt to the newest versions pyproject.toml allows (then run make test).
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[dev]'
	{ echo '# Every package version CI and the Docker image install, as tested (pip constraints; refresh: make lock).'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^image-pipeline'; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) data .kafka-data build *.egg-info .pytest_cache .mypy_cache .ruff_cache

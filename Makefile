# bridge — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BRIDGE := $(BIN)/bridge
export BRIDGE_HOME ?= .bridge

.DEFAULT_GOAL := help
.PHONY: help install demo test test-databricks test-databricks-workspace-mode test-sqlserver-auto test-container constraints lint typecheck check completions bench bench-sqlserver bench-sync bench-spark campaign clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/bridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/bridge ## Create .venv and install bridge with its dev tools (both SQL Server drivers come with it)

demo: install ## Seed a sample lake and target under .bridge/, sync INSERT/UPDATE/DELETE, show status
	$(BRIDGE) init
	$(BIN)/python -m bridge_cli.demo
	$(BRIDGE) submit insert --source '`mi-catalog`.`mi-schema`.datos_nuevos' \
		--target dbo.MarketScopeAccess --pk username --expected 5
	$(BRIDGE) submit update --source mi-catalog.mi-schema.datos_actualizados \
		--target dbo.MarketScopeAccess --pk username --expected 2
	$(BRIDGE) submit delete --target dbo.MarketScopeAccess --pk username \
		--filter '{"username": ["elena"]}' --expected 1
	$(BRIDGE) process-once
	$(BRIDGE) status --limit 6

# pyspark runs the Spark staging job's tests on a local SparkSession (they skip without Java).
test: install ## Run the test suite
	$(BIN)/python -m pip install --quiet -e '.[spark]'
	$(BIN)/python -m pytest -q

# A profile that names no driver (`driver: auto`): the contract and fidelity tests of that pair, run
# in two processes, since the loader reads LD_LIBRARY_PATH only at start. First as installed, where
# auto must pick mssql-python; then with a libltdl.so.7 that is not a library first on the loader's
# path, so mssql-python's ODBC driver cannot load and auto must fall back to pymssql
# (BRIDGE_TEST_EXPECT_DRIVER tells the pair which to expect; a run in the wrong mode fails).
AUTO_TESTS  := tests/test_contract.py tests/test_contract_sync.py tests/test_sqlserver_fidelity.py
AUTO_SELECT := sqlserver-auto or auto:auto or auto:bulk or auto-auto
UNLOADABLE  := $(abspath tests/fixtures/unloadable-odbc)
test-sqlserver-auto: install ## Contract + fidelity tests of a profile naming no driver, mssql-python loadable then not (needs BRIDGE_TEST_MSSQL_URL)
	@test -n "$$BRIDGE_TEST_MSSQL_URL" || { echo "set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:1433/db"; exit 2; }
	@echo "== driver: auto, mssql-python loadable: expects mssql-python"
	@env -u BRIDGE_TEST_EXPECT_DRIVER $(BIN)/python -m pytest -q -rs -p no:cacheprovider \
	  -k '$(AUTO_SELECT)' $(AUTO_TESTS); loadable=$$?; \
	echo "== driver: auto, mssql-python unloadable (LD_LIBRARY_PATH=$(UNLOADABLE)): expects pymssql"; \
	LD_LIBRARY_PATH="$(UNLOADABLE)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" BRIDGE_TEST_EXPECT_DRIVER=pymssql \
	  $(BIN)/python -m pytest -q -rs -p no:cacheprovider -k '$(AUTO_SELECT)' $(AUTO_TESTS); unloadable=$$?; \
	echo "== exit status: loadable $$loadable, unloadable $$unloadable"; \
	test $$loadable -eq 0 && test $$unloadable -eq 0


# The catalogs the tests name, each an Iceberg catalog of the stand-in (tests/databricks_env.py).
export DBX_STANDIN_CATALOGS ?= main,000-sql-databricks-bridge,mi-catalog,seed,c,003-precios,lake
DBX_STANDIN := $(BIN)/python tests/standins/databricks/dbx_standin.py

# The stand-in runs in a private network namespace where one can be made, else on free ports of
# 127.0.0.1 (BRIDGE_STANDIN_NO_NETNS=1 forces that); it stops when pytest ends.
test-databricks: install ## Run the Databricks tests against the local SQL warehouse stand-in (needs Java, nginx)
	$(BIN)/python -m pip install --quiet -e '.[standin]'
	$(DBX_STANDIN) run -- $(abspath $(BIN))/python -m pytest -q -k databricks -p no:cacheprovider $(PYTEST_ARGS)

# Workspace mode (tests/databricks_env.py) without a workspace: the BRIDGE_TEST_DATABRICKS_*
# variables name the stand-in itself, so tests put their tables in schemas of this run inside
# catalog `main` and drop them at the end; the stand-in's shim and Iceberg quirks still apply.
test-databricks-workspace-mode: install ## The Databricks tests in workspace mode, pointed at the local stand-in
	$(BIN)/python -m pip install --quiet -e '.[standin]'
	$(DBX_STANDIN) run -- sh -c 'BRIDGE_TEST_DATABRICKS_HOST="$$DBX_STANDIN_HOST:$$DBX_STANDIN_PORT" \
	  BRIDGE_TEST_DATABRICKS_HTTP_PATH="$$DBX_STANDIN_HTTP_PATH" BRIDGE_TEST_DATABRICKS_TOKEN="$$DBX_STANDIN_TOKEN" \
	  BRIDGE_TEST_DATABRICKS_CATALOG=main exec $(abspath $(BIN))/python -m pytest -q -rs -k databricks \
	  -p no:cacheprovider $(PYTEST_ARGS)'

# The container image installs these exact versions (Python 3.12 on Linux, as python:3.12-slim):
# a fresh resolution of bridge and every extra the image offers, by pip itself.
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3.12) python3.12)
constraints: ## Re-resolve examples/constraints.txt, the pinned versions the container image installs
	rm -rf .constraints-venv && $(PYTHON312) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet --upgrade pip
	.constraints-venv/bin/python -m pip install --quiet --dry-run --ignore-installed \
		--report .constraints-venv/report.json '.'
	.constraints-venv/bin/python examples/constraints.py .constraints-venv/report.json > examples/constraints.txt
	rm -rf .constraints-venv

PYTHON_SLIM ?= $(abspath ../shared/standins/python-slim)

# The stand-in's `build` starts a Docker daemon and makes the python:3.12-slim base (no registry
# here); `down` stops that daemon afterwards, whatever the tests did.
test-container: install ## Build examples/Dockerfile on a local Docker daemon and test the image as it runs
	S="$(PYTHON_SLIM)" bash -c '\
	  trap "\"$$S/down\"" EXIT; "$$S/build" || exit 1; \
	  BRIDGE_TEST_CONTAINER=1 $(BIN)/python -m pytest -q -rs -p no:cacheprovider tests/test_container.py'

lint: install ## ruff and mypy
	$(BIN)/ruff check bridge_cli tests bench examples
	$(BIN)/mypy

completions: install ## Regenerate completions/ from the app
	$(BIN)/python -m bridge_cli.completions completions

bench: install ## Run the benchmarks under bench/ that need no server
	$(BIN)/python bench/bench_engine.py

CAMPAIGN_ARGS ?= --runs 3 --kills 60 --events 150
campaign: install ## Fault campaign: kill -9 workers mid-event on the embedded default, check every row
	$(BIN)/python -m tests.campaign $(CAMPAIGN_ARGS)

# bench_default_driver.py takes --rows and --repeat only: its own variable, as BENCH_ARGS may hold --only.
DEFAULT_BENCH_ARGS ?=
bench-sqlserver: install ## The default profile (no driver:) vs each driver's raw load, then write methods, both drivers (needs BRIDGE_TEST_MSSQL_URL)
	@test -n "$$BRIDGE_TEST_MSSQL_URL" || { echo "set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:1433/db"; exit 2; }
	$(BIN)/python bench/bench_default_driver.py $(DEFAULT_BENCH_ARGS)
	$(BIN)/python bench/bench_write_methods.py $(BENCH_ARGS)

bench-sync: install ## UPSERT vs the same rows as UPDATE + INSERT events, both drivers (needs BRIDGE_TEST_MSSQL_URL)
	@test -n "$$BRIDGE_TEST_MSSQL_URL" || { echo "set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:1433/db"; exit 2; }
	$(BIN)/python bench/bench_sync.py $(BENCH_ARGS)

bench-spark: install ## A 1,000,000-row event: worker vs local Spark, 1 and 2 partitions (needs BRIDGE_TEST_MSSQL_URL, Java, libjtds-java)
	@test -n "$$BRIDGE_TEST_MSSQL_URL" || { echo "set BRIDGE_TEST_MSSQL_URL=mssql://user:pass@host:1433/db"; exit 2; }
	$(BIN)/python -m pip install --quiet -e '.[spark]'
	$(BIN)/python bench/bench_spark.py $(BENCH_ARGS)

clean: ## Remove .venv, .bridge and caches
	rm -rf $(VENV) .bridge .pytest_cache .mypy_cache .ruff_cache

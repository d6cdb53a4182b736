# The front door. `make run` and `make test` set everything up themselves (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PYTEST_ARGS ?=
DEMO ?= true

.PHONY: setup run test lint format proto bench clean lock

setup:
	@bash scripts/bootstrap.sh

proto:
	@$(BIN)/python scripts/gen_proto.py

# requirements.lock: the run-time dependencies, pinned (the image's cached layer; bootstrap's
# constraints). Run after changing the dependencies in pyproject.toml.
lock:
	@$(BIN)/python scripts/lock.py

run: setup
	@echo "collector :9000, query :8000, health :5000 -- Ctrl-C stops."
	@echo "To get a token (first time): $(BIN)/trackerctl user create-admin --email you@example.com"
	@echo "  then: grpcurl -plaintext -d '{\"email\": \"you@example.com\", \"password\": \"...\"}' \\"
	@echo "        localhost:9000 tracker.v1.AuthService/Login   (README: 'Walkthrough with grpcurl')"
	@echo "Demo: a Find My simulator on :8811 with 5 moving trackers (client 'Demo Apparel'),"
	@echo "  fetched every 15 s; reports arrive at once ('make run DEMO=false' to leave it out)."
	@echo "  Also 4 detectors along a Berlin road fed by the traffic simulator (docs/detectors.md)."
	@exec $(BIN)/tracker-server --log-format text --demo $(DEMO)

lint:
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	.tools/node_modules/.bin/buf lint
	bash scripts/buf_breaking.sh

format:
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

test: setup lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.setup_api
	$(BIN)/python -m bench.keys
	$(BIN)/python -m bench.reports
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.fetch_cycle
	$(BIN)/python -m bench.processing
	$(BIN)/python -m bench.geocoding
	$(BIN)/python -m bench.health_under_load
	$(BIN)/python -m bench.idempotency
	$(BIN)/python -m bench.jobs
	$(BIN)/python -m bench.fleet
	$(BIN)/python -m bench.upgrade_planner
	$(BIN)/python -m bench.telemetry

clean:
	rm -rf $(VENV) .state .tools src/tracker .pytest_cache .mypy_cache .ruff_cache

# Continuum: every developer and CI entry point.
#   make run    start the suite on the embedded PostgreSQL and Redis
#   make test   run every test (installs everything it needs first)
# Each target installs what it needs: a fresh machine needs only Python 3.11 and make.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TOOLS := .tools
UV := $(TOOLS)/bin/uv
BIN := .venv/bin
BREAKING_AGAINST ?= main
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

PROTO_SOURCES := $(shell find proto tests/proto -name '*.proto' 2>/dev/null)
PACKAGE_FILES := pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

.PHONY: setup proto lint fmt typecheck buf test check run bench-floor bench-identity bench-cart bench-profile bench-inventory bench-recommendation bench-handoff bench-suite helm-check clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8

.venv/.setup: $(UV) $(PACKAGE_FILES)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

build/.proto: .venv/.setup $(PROTO_SOURCES) scripts/gen_proto.py
	$(BIN)/python scripts/gen_proto.py > /dev/null
	@touch $@

## setup: create .venv with every package of the workspace and the dev tools
setup: .venv/.setup

## proto: generate Python code and the descriptor image from proto/
proto: build/.proto

## lint: ruff, mypy strict, buf lint and buf breaking against $(BREAKING_AGAINST)
lint: proto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/runtime/src libs/sdk/src libs/cli/src services bench scripts
	$(BIN)/buf format --diff --exit-code proto
	$(BIN)/buf lint build/continuum.binpb --path continuum
	@if git cat-file -e $(BREAKING_AGAINST):proto 2>/dev/null; then \
	  rm -rf build/against && mkdir -p build/against && \
	  git archive $(BREAKING_AGAINST) proto | tar -x -C build/against && \
	  $(BIN)/python scripts/gen_proto.py --image-only build/against.binpb --proto-root build/against/proto && \
	  $(BIN)/buf breaking build/continuum.binpb --against build/against.binpb --path continuum && \
	  echo "buf breaking: no breaking change against $(BREAKING_AGAINST)"; \
	else echo "buf breaking: $(BREAKING_AGAINST) has no contracts yet, skipped"; fi

## fmt: apply ruff and buf formatting
fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/buf format -w proto

## test: every test, on the embedded stack unless CONTINUUM_DATABASE_URL/REDIS_URL are set
test: proto
	$(BIN)/pytest $(PYTEST_ARGS)

## check: everything CI checks
check: lint test

## run: start the six services on the embedded stack, seed, play the handoff story and print the briefing; until Ctrl-C
run: proto
	$(BIN)/continuum run

## helm-check: render the chart (4 variants), validate on Kubernetes 1.27/1.30/1.37, lint, check properties
helm-check: setup
	$(BIN)/python scripts/helm_check.py

## bench-floor: bare grpc.aio echo server and client in separate processes, concurrency 32
bench-floor: setup
	$(BIN)/python -m bench.floor

## bench-identity: FEBRL4 link quality, probabilistic and deterministic resolve (1M customers)
bench-identity: proto
	$(UV) sync --locked --group bench --inexact --python $(PYTHON)
	$(BIN)/python -m bench.identity $(BENCH_ARGS)

## bench-inventory: hot-SKU reservations and oversell, availability (100k SKUs x 50 locations), forecast error
bench-inventory: proto
	$(BIN)/python -m bench.inventory $(BENCH_ARGS)

## bench-profile: sustained ingestion (60 s) with lag, and GetProfileSummary with 1M customers
bench-profile: proto
	$(BIN)/python -m bench.profile $(BENCH_ARGS)

## bench-cart: GetCart and AddItem at concurrency 32 against the floor (100,000 carts)
bench-cart: proto
	$(BIN)/python -m bench.cart $(BENCH_ARGS)

## bench-recommendation: Instacart last-order ranking quality vs baselines, GetRecommendations vs the floor (100k items, 1M interactions)
bench-recommendation: proto
	$(UV) sync --locked --group bench --inexact --python $(PYTHON)
	$(BIN)/python -m bench.recommendation $(BENCH_ARGS)

## bench-handoff: all six services, check-ins at 50/s for 60 s, check-in to briefing on the associate stream
bench-handoff: proto
	$(BIN)/python -m bench.handoff $(BENCH_ARGS)

## bench-suite: the six services via the launcher, mixed load for 300 s (ingest, cart, check-ins with feeds), per-operation p50/p99
bench-suite: proto
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

clean:
	rm -rf build .venv .tools libs/contracts/src/continuum libs/contracts/src/buf tests/_generated

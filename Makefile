# facelab — `make demo` sets everything up and runs the pipeline on the sample photos;
# `make test` runs the tests. Both create .venv on first use (scripts/bootstrap.sh).
PHOTOS ?= ../shared/data/celeb5
STRANGERS ?= ../shared/data/strangers
WORKSPACE ?= workspace
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all lint format clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(BIN)/facelab run $(PHOTOS) --workspace $(WORKSPACE) $(if $(wildcard $(STRANGERS)),--strangers $(STRANGERS))

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(WORKSPACE) .pytest_cache .ruff_cache

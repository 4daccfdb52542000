# facelab — `make demo` sets everything up and runs the pipeline on the sample photos;
# `make test` runs the tests. Both create .venv on first use (scripts/bootstrap.sh).
PHOTOS ?= ../shared/data/celeb5
STRANGERS ?= ../shared/data/strangers
WORKSPACE ?= workspace
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all lint format clean bench-album

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

# Side by side with the face_recognition peer (issue #18): its own venv in .bench/peer-venv (made on
# first use), then docs/benchmarks_album.md and docs/benchmarks.md. ~20 min; ARGS="--limit 3" is quick.
bench-album: setup
	$(BIN)/python bench/bench_album.py $(ARGS)
	$(BIN)/python bench/collect.py

clean:
	rm -rf $(WORKSPACE) .pytest_cache .ruff_cache

# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := data/demo

.PHONY: demo demo-data demo-tune demo-compare test lint bench-prepare bench-train bench-nodes clean

# Created once, and again whenever pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,bench,mlflow]"
	touch $@

## demo: synthesise instruments, prepare 1 s clips (Ray Data), train the default recipe
## (no --config: ddsp-stft-cond, a class-conditional harmonic-plus-noise G against a
## multi-resolution STFT D) on 2 CPU workers (Ray Train), and generate new clips of every
## class from its checkpoint
demo: demo-data
	rm -rf $(DEMO_DIR)/runs/demo
	$(BIN)/audiogan train --data $(DEMO_DIR)/prepared --storage $(DEMO_DIR)/runs --name demo \
		--workers 2 max_steps=500
	$(BIN)/audiogan generate $(DEMO_DIR)/runs/demo $(DEMO_DIR)/generated --n 8

## demo-tune: a Ray Tune sweep of the default recipe (the one demo trains) on the demo's data,
## judged on an evaluation classifier fitted on that data, ASHA stopping the laggards; then the
## best settings and the preset's trained anew on a fresh seed and scored (--confirm). Prints
## both tables and where best.json and confirm.json are
demo-tune: demo-data
	rm -rf $(DEMO_DIR)/sweeps/demo
	$(BIN)/audiogan evaluator fit --data $(DEMO_DIR)/prepared
	$(BIN)/audiogan tune --data $(DEMO_DIR)/prepared --storage $(DEMO_DIR)/sweeps --name demo \
		--config sweep_demo --confirm

## demo-compare: the demo's recipe against textbook WaveGAN-GP on the demo's data, 5 minutes
## each on 2 CPU workers, scored by an evaluation classifier fitted on that data (about 11 min)
demo-compare: demo-data
	$(BIN)/audiogan compare --data $(DEMO_DIR)/prepared --storage $(DEMO_DIR)/compare \
		--minutes 5 --recipes wavegan-gp,ddsp-stft-cond --overwrite

demo-data: $(BIN)/.installed
	$(BIN)/audiogan synth $(DEMO_DIR)/raw --clips-per-class 40 --seed 0
	$(BIN)/audiogan prepare $(DEMO_DIR)/raw $(DEMO_DIR)/prepared --clip-seconds 1 --overwrite

## test: the whole suite (unit, Ray and S3 integration), on one shared Ray instance.
## Ray 2.60 binds some of its servers to every interface, so the suite runs in a network
## namespace of its own that has only loopback (and Ray's token auth can then stay off).
test: $(BIN)/.installed
	@if unshare --net true 2>/dev/null && command -v ip >/dev/null; then \
		RAY_AUTH_MODE=disabled unshare --net sh -c 'ip link set lo up && exec $(BIN)/python -m pytest $(PYTEST_ARGS)'; \
	else \
		echo "make test: no network namespace here; Ray keeps its token auth on"; \
		$(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

lint: $(BIN)/.installed
	$(BIN)/ruff check audiogan jobs tests
	$(BIN)/ruff format --check audiogan jobs tests

## bench-prepare: the prepare benchmark of docs/benchmarks.md on 3,000 synthetic clips
bench-prepare: $(BIN)/.installed
	$(BIN)/audiogan synth data/bench-synth3k --clips-per-class 750 --seed 1
	$(BIN)/audiogan bench prepare data/bench-synth3k --json

## bench-train: the training benchmark of docs/benchmarks.md (plain loop vs Ray Train, 1 and 2
## workers): the small WaveGAN, the 2019 baseline, and the default recipe (`make demo`'s)
bench-train: $(BIN)/.installed
	$(BIN)/audiogan bench train --model wavegan --json
	$(BIN)/audiogan bench train --model dcgan --steps 30 --json
	$(BIN)/audiogan bench train --config ddsp_stft_cond --clip-seconds 1 --steps 160 --window 16 --json

## bench-nodes: a step's cost with its 2 workers on one node and on two (docs/cluster.md);
## a 3-node Ray cluster on this machine, in a loopback-only namespace as `make test` runs
bench-nodes: $(BIN)/.installed
	RAY_AUTH_MODE=disabled unshare --net sh -c 'ip link set lo up && exec $(BIN)/python tests/bench_nodes.py'

clean:
	rm -rf $(VENV) data .pytest_cache

# flexbone: `make demo` runs the main job, `make test` the whole suite. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip's warnings about the local package cache are noise; real errors still fail the build
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo demo-elastic test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing flexbone and its pinned dependencies into $(VENV) (first run only; a few minutes)"
	$(PIP) -e '.[test]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@$(BIN)/python -c "import torch, torchvision, flexbone; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| flexbone', flexbone.__version__)"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flexbone demo

# train once (a digits supernet, DεpS), then the best sub-network for three latency budgets on this machine (< 10 min)
demo-elastic: $(STAMP)
	$(BIN)/flexbone demo elastic

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_vs_timm_cpu.py --suite resnet
	$(BIN)/python benchmarks/bench_vs_timm_cpu.py --suite families --batch-size 8

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# The two commands a newcomer needs:  `make export` (set up + main job)  and  `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.coreba-installed

.PHONY: setup export demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

export: setup  ## the main job: export the (demo-trained) model to ONNX, with parity checks
	$(PY) export/to_onnx.py

demo: setup  ## build the full-size model, run it on random features, print params/shapes/latency
	$(PY) -m coreba.demo

test: setup  ## every test, one pytest process per group of folders (see scripts/run_tests.sh), then ruff
	PY=$(PY) bash scripts/run_tests.sh
	$(VENV)/bin/ruff check .

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts .pytest_cache .ruff_cache

# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment .venv on first use; constraints.txt pins PyTorch to the
# CPU build that lies on these machines' disk.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= build/demo

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The hardware chain on the shipped digits model (no download): check it, evaluate it, generate
# its Verilog, cosimulate the test split bit for bit, synthesize it beside its multiply-accumulate
# baseline for ECP5; then train it again from its recipe and report how the result
# compares (bchw demo --help).
demo: $(STAMP)
	$(BIN)/bchw demo -o $(DEMO)

# ruff, then the import contracts of pyproject.toml (the layers import downward only).
lint: $(STAMP)
	$(BIN)/ruff check bchw rtl_gen sim models tests
	$(BIN)/lint-imports

# Everything that proves the claims (CI runs this), one worker per core: every test has its own
# folders (tmp_path), so they run side by side.
test: lint
	$(BIN)/python -m pytest -n auto --durations=15

# The edit-test loop: every test but those marked slow (training, cosimulation, long synthesis).
test-fast: lint
	$(BIN)/python -m pytest -n auto -m "not slow"

clean:
	rm -rf build .pytest_cache .ruff_cache

# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment .venv on first use; constraints.txt pins PyTorch to the
# CPU build that lies on these machines' disk.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= build/demo

.PHONY: demo test lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The whole chain on scikit-learn's digits (no download): train the shipped model again and check
# it is byte-identical, evaluate, generate Verilog, cosimulate the test split bit for bit, and
# synthesize it beside its multiply-accumulate baseline for iCE40 and ECP5 (bchw demo --help).
demo: $(STAMP)
	$(BIN)/bchw demo -o $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check bchw rtl_gen sim tests

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf build .pytest_cache .ruff_cache

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

# Train a small BinaryConnect model on scikit-learn's digits, export it to an integer model,
# evaluate it with the bit-exact reference beside the float model, generate its Verilog and
# cosimulate that Verilog (Verilator) on the whole test split against the reference.
demo: $(STAMP)
	$(BIN)/bchw train --dataset digits --seed 0 --out $(DEMO)/train
	$(BIN)/bchw export $(DEMO)/train/checkpoint.pt -o $(DEMO)/digits.bchw
	$(BIN)/bchw eval $(DEMO)/digits.bchw --checkpoint $(DEMO)/train/checkpoint.pt \
		--dump $(DEMO)/digits-scores.npz
	$(BIN)/bchw generate $(DEMO)/digits.bchw -o $(DEMO)/rtl
	$(BIN)/bchw cosim $(DEMO)/digits.bchw --design $(DEMO)/rtl -o $(DEMO)/cosim

lint: $(STAMP)
	$(BIN)/ruff check bchw rtl_gen sim tests

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf build .pytest_cache .ruff_cache

# The two set-up commands (README): `make demo` and `make test`.
# Each creates .venv if needed and installs the project with what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

# torch's CPU build: PyPI's Linux torch wheel pulls several GB of CUDA libraries. An index
# that cannot be reached (offline mirrors) is skipped after one quick retry.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

$(BIN)/shopsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --retries 1 --timeout 20 torch==2.13.0 --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

install: $(BIN)/shopsearch

# Export the encoder, ingest the demo catalog into embedded Qdrant Edge, run real queries.
demo: install
	$(BIN)/shopsearch model export --if-missing
	$(BIN)/shopsearch ingest examples/catalog.parquet --collection demo
	$(BIN)/shopsearch query "women's casual shoes" --collection demo
	$(BIN)/shopsearch query "black boots for women" --collection demo \
		--filter "color in (Black,Brown)" --filter "price<=1500"
	$(BIN)/shopsearch query "womens casul shoes" --collection demo --top-k 2

test: install
	$(BIN)/ruff check shopsearch tests benchmarks examples
	$(BIN)/python -m pytest -q

clean:
	rm -rf .shopsearch .pytest_cache

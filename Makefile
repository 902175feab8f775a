# The two set-up commands (README): `make demo` and `make test`.
# Each creates .venv if needed and installs the project with what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-lean lint install clean

# torch's CPU build: PyPI's Linux torch wheel pulls several GB of CUDA libraries. An index
# that cannot be reached (offline mirrors) is skipped after one quick retry.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

$(BIN)/shopsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --retries 1 --timeout 20 torch==2.13.0 --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
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
	@echo "Serve it over HTTP: $(BIN)/shopsearch serve -c demo, then open http://127.0.0.1:8000/ for the search page (API docs: /docs)"

test: install
	$(BIN)/ruff check shopsearch tests benchmarks examples
	$(BIN)/python -m pytest -q --durations=15

# The ingest and query tests in an environment holding only the base install (no extras, no
# torch), installed from the package as a user gets it, on a model the full environment exports.
LEAN ?= .venv-lean
LEAN_MODEL ?= .shopsearch/lean-model/all-MiniLM-L6-v2
LEAN_TESTS ?= tests/test_lean.py tests/test_layout.py tests/test_readme.py \
	tests/test_forked_query.py tests/test_prepared_query.py tests/test_store_contract.py \
	tests/test_ingest.py tests/test_search_modes.py tests/test_search_filters.py

test-lean: install
	$(BIN)/shopsearch model export --out $(LEAN_MODEL) --if-missing >/dev/null
	rm -rf $(LEAN) build
	$(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/pip install --quiet . pytest
	rm -rf build
	cd tests && SHOPSEARCH_LEAN=1 SHOPSEARCH_TEST_MODEL=$(abspath $(LEAN_MODEL)) \
		../$(LEAN)/bin/python -m pytest -q -p no:cacheprovider --rootdir .. \
		$(patsubst tests/%,%,$(wildcard $(LEAN_TESTS)))

clean:
	rm -rf .shopsearch .pytest_cache .venv-lean

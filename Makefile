VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-fast lint demo clean

# Re-run the install only when what it depends on changed.
$(STAMP): pyproject.toml client/pyproject.toml scripts/install.sh
	VENV=$(VENV) scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/attune serve --host $(HOST) --port $(PORT)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(VENV)/bin/attune demo --backend heuristic

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

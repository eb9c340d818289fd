# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install StarEdge with constraints.txt (torch pinned
# to the CPU wheel: a looser spec pulls several GB of CUDA packages).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= all,dev,peers
STAMP  := $(VENV)/.staredge-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean docs lock

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools' "Editable installation ... Please be careful" notice (shown by pip >= 25 even
	@# with --quiet) is silenced by its message only; editable_mode=compat would break the
	@# models/ -> staredge.models package mapping
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

# Rewrite constraints.txt as a full lock of the installed environment (run after changing
# pyproject's dependencies and a successful install; keeps the header comments).
lock: install
	@grep '^#' constraints.txt > constraints.txt.new
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/+cpu$$//' >> constraints.txt.new
	@mv constraints.txt.new constraints.txt

demo: install
	$(BIN)/staredge demo

# Swift for ios_bench/: the one on PATH, else the toolchain at /opt/swift.
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)

test: install
	$(BIN)/python -m pytest -n 2 -ra $(PYTEST_ARGS)
	@if [ -x "$(SWIFT)" ]; then \
		echo "ios_bench: swift build && swift test ($(SWIFT))"; \
		cd ios_bench && PATH="$$(dirname $(SWIFT)):$$PATH" "$(SWIFT)" build && PATH="$$(dirname $(SWIFT)):$$PATH" "$(SWIFT)" test; \
	else \
		echo "ios_bench: no Swift toolchain (not on PATH, not at /opt/swift): swift build/test NOT run"; \
	fi

# Everything but the tests marked slow (for a quick local loop).
test-fast: install
	$(BIN)/python -m pytest -n 2 -ra -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench bench-quick lint clean postgres-server browser screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check codex_logging tests bench scripts
	$(BIN)/ruff format --check codex_logging tests bench scripts
	$(BIN)/mypy

test: lint postgres-server browser
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest
	$(BIN)/python -m coverage combine --quiet
	$(BIN)/python -m coverage report

# The tests start a throwaway PostgreSQL cluster (tests/pg.py) and need the
# server binaries. Debian's package is installed if they are missing, without
# creating or starting the package's own cluster or service.
PG_FOUND = $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) $(shell command -v initdb 2>/dev/null))

postgres-server:
ifeq ($(strip $(PG_FOUND)),)
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make: PostgreSQL server binaries (initdb, pg_ctl) not found and cannot be installed here:" \
	    "as root run 'apt-get install postgresql' (the PostgreSQL tests skip without them, and fail under CI)" >&2; \
	else \
	  set -e; \
	  mkdir -p /etc/postgresql-common/createcluster.d; \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/codex-logging.conf; \
	  made_policy=; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends \
	    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql \
	    || status=$$?; \
	  if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $${status:-0}; \
	fi
endif

# The web viewer's tests drive a headless Chromium (tests/browser.py): Debian's
# chromium and chromium-driver are installed if either is missing.
BROWSER_FOUND = $(and $(shell command -v chromium 2>/dev/null),$(shell command -v chromedriver 2>/dev/null))

browser:
ifeq ($(strip $(BROWSER_FOUND)),)
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make: chromium and chromedriver not found and cannot be installed here:" \
	    "as root run 'apt-get install chromium chromium-driver' (the browser tests skip without them, and fail under CI)" >&2; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	fi
endif

# docs/viewer-sessions.png and docs/viewer-session.png, from demo sessions.
screenshots: $(STAMP) browser
	$(BIN)/python scripts/viewer_screenshots.py

demo: $(STAMP)
	$(BIN)/python scripts/codex_end_to_end.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

# The same tables on small inputs, for a developer's loop (under a minute):
# the figures in docs/performance.md come from `make bench`, never from this.
bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	BENCH_RECORDS=4000 BENCH_REPEATS=2 BENCH_CHUNK=1000 BENCH_SCALING_RECORDS=4000 \
	BENCH_SYNC_LINES=50000 BENCH_BIG_MB=0 BENCH_IDLE_FILES=1000 BENCH_LARGE_RECORDS=20 \
	BENCH_LONG_LINE_MB=8 BENCH_QUERY_EVENTS=50000 BENCH_PG_LINES=20000 BENCH_OTLP_LINES=20000 \
	BENCH_VIEWER_EVENTS=50000 BENCH_VIEWER_SESSIONS=1000 \
	BENCH_COMPACT_EVENTS=20000 BENCH_COMPACT_CURVE=20000 BENCH_COMPACT_ROUNDS=1 \
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .codex .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache

# Two entry points: `make run` (demo server + job cluster) and `make test`.
# Everything is installed into .venv from the pinned files in requirements/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format venv clean loadtest

venv: $(STAMP)

# Reinstall whenever a requirements file changes.
$(STAMP): requirements/base.txt requirements/dev.txt requirements/face.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	# face_recognition declares `dlib` (a source build); dlib-bin provides it prebuilt.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/face.txt
	@touch $(STAMP)

run: $(STAMP)
	$(MANAGE) migrate --noinput -v 0
	SITE_URL=$${SITE_URL:-http://$(HOST):$(PORT)} $(MANAGE) load_demo
	@echo "Starting the job cluster and the web server; Ctrl-C stops both."
	@# The cluster runs in its own session so the terminal's Ctrl-C does not reach
	@# it directly: django-q2 can deadlock when a second signal interrupts its
	@# shutdown, so it gets exactly one SIGTERM, from the trap.
	@export DJANGO_DEBUG=$${DJANGO_DEBUG:-1}; \
	cleanup() { trap - EXIT INT TERM; kill -TERM $$web $$cluster 2>/dev/null; wait $$cluster 2>/dev/null; }; \
	trap cleanup EXIT INT TERM; \
	setsid $(MANAGE) qcluster & cluster=$$!; \
	$(MANAGE) runserver --noreload $(HOST):$(PORT) & web=$$!; \
	wait $$web

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Locust against gunicorn + a qcluster with production settings on loopback (tests/load/run.py):
# make loadtest USERS=100 SPAWN_RATE=10 RUN_TIME=3m [LOAD_ARGS="--backend sqlite --photos 500"]
USERS ?= 30
SPAWN_RATE ?= 5
RUN_TIME ?= 10m
loadtest: $(STAMP)
	$(PY) -m tests.load.run --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(RUN_TIME) $(LOAD_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

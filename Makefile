# Two entry points: `make run` (demo server + job cluster) and `make test`.
# Everything is installed into .venv from the pinned files in requirements/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format venv demo clean

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
	$(MANAGE) load_demo
	@echo "Starting the job cluster and the web server; Ctrl-C stops both."
	@bash -c 'trap "kill \$$(jobs -p) 2>/dev/null; wait" EXIT INT TERM; \
		DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(MANAGE) qcluster & \
		DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(MANAGE) runserver --noreload $(HOST):$(PORT)'

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

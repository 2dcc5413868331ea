# Ferry: `make run` for a demo on the embedded default, `make test` for the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# make test-services: the suite against PostgreSQL, Redis and an S3 API (moto's server,
# started by the test session on a free loopback port). The port also names this run's
# django-q2 queue and channel-layer keys, so two runs on one machine never meet.
# Each suite runs on TEST_WORKERS pytest-xdist processes (0: in this one); tests/conftest.py
# gives each worker its own queue, channel-layer prefix and S3 API server.
TEST_WORKERS ?= 2
PYTEST = $(PY) -m pytest -n $(TEST_WORKERS)
FREE_PORT := import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
SERVICES_ENV = \
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/ferry \
	REDIS_URL=redis://127.0.0.1:6379/1 \
	Q_BROKER=redis \
	AWS_STORAGE_BUCKET_NAME=ferry-test \
	AWS_S3_ENDPOINT_URL=http://127.0.0.1:$$run \
	AWS_ACCESS_KEY_ID=test-key \
	AWS_SECRET_ACCESS_KEY=test-secret \
	FERRY_TEST_SERVICES=1 \
	Q_CLUSTER_NAME=ferry-test-$$run \
	CHANNEL_LAYER_PREFIX=ferry-test-$$run

.PHONY: run test test-services lint bench-upload clean

# The demo runs with DEBUG on (a per-machine key in var/, static files from the apps);
# Ferry's own default is off (docs/operations.md, "Production settings").
run: export DJANGO_DEBUG = 1

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py create_demo_admin
	$(PY) manage.py seed_demo --files 12 --pages 4 --objects 60 --media-mb 4 --libraries 2 --owner admin
	@echo "Ferry: http://$(HOST):$(PORT)/admin/ and http://$(HOST):$(PORT)/api/docs/ (Ctrl-C stops all)"
	@# Ctrl-C reaches every process of the terminal's group; a SIGTERM to make is passed on
	@# to the server and the cluster (never to the cluster's own children: it stops them).
	@# If either exits, the other is stopped too.
	@trap 'stop=INT' INT; trap 'stop=TERM' TERM; \
	$(PY) manage.py qcluster & cluster=$$!; \
	$(VENV)/bin/uvicorn project.asgi:application --host $(HOST) --port $(PORT) & server=$$!; \
	wait -n; [ "$$stop" = INT ] || kill -TERM $$cluster $$server 2>/dev/null; \
	until wait; do :; done

test: $(VENV)/.installed-dev
	$(PYTEST)

test-services: $(VENV)/.installed-dev
	run=$$($(PY) -c '$(FREE_PORT)') && $(SERVICES_ENV) $(PYTEST)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench-upload: $(VENV)/.installed-dev
	$(PY) bench/upload.py --mb 200

clean:
	rm -rf $(VENV) var .pytest_cache

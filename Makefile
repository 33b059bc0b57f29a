# `make run` and `make test` bootstrap their own virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi --env-file development.env
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test bench migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-database.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-bench.txt
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	touch $@

migrate: $(VENV)/.installed
	$(FLASK) db upgrade

run: migrate
	@echo
	@echo "Serving on http://$(HOST):$(PORT)  (try: curl http://$(HOST):$(PORT)/livez)"
	@echo "Get a token, in another terminal:"
	@echo "  $(FLASK) auth create-user admin --role admin"
	@echo "  curl -s -X POST http://$(HOST):$(PORT)/api/auth/login -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"username\": \"admin\", \"password\": \"<the password>\"}'"
	@echo "or, after create-user, open the status page: http://$(HOST):$(PORT)/dashboard"
	@echo
	$(FLASK) run --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache

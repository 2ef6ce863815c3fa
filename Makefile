# The two set-up commands: `make run` (a sample function on localhost:8080) and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: dev run test bench clean

dev: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

run: dev
	@echo "Serving runtimes/python/examples/hello.py on localhost:$(PORT). Try:"
	@echo "  curl -s -XPOST localhost:$(PORT)/run -H 'Content-Type: application/json' -d '{\"value\":{\"name\":\"Ada\"},\"activation_id\":\"a1\"}'"
	$(BIN)/actionproxy serve --runtime python --port $(PORT) --init runtimes/python/examples/hello.py

test: dev
	$(BIN)/pytest

bench: dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) bench/results .pytest_cache

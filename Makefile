# The two set-up commands: `make run` (a sample function on localhost:8080) and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Debian's docker client has BuildKit built in (a newer client on PATH may want buildx)
DOCKER ?= $(shell test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)
RUNTIMES := python nodejs blackbox
# Behind a TLS-intercepting proxy: make images CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CA_BUNDLE ?=
comma := ,
SECRET := $(if $(CA_BUNDLE),--secret id=ca_bundle$(comma)src=$(CA_BUNDLE))

.PHONY: dev run test bench clean base-images images

# bytecode for the proxy and the launchers, also where PYTHONDONTWRITEBYTECODE is set (as in
# the images, where it is built in): a cold start then compiles nothing
dev: $(VENV)/.installed $(VENV)/node_modules/esbuild
	$(BIN)/python -m compileall -q proxy

# the Node.js launcher's TypeScript transpiler, beside the venv's proxy (as in the image)
$(VENV)/node_modules/esbuild: runtimes/base/install-esbuild.py $(VENV)/.installed
	$(if $(CA_BUNDLE),SSL_CERT_FILE=$(CA_BUNDLE)) $(BIN)/python runtimes/base/install-esbuild.py $(VENV)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

run: dev
	@echo "Serving runtimes/python/examples/hello.py on 127.0.0.1:$(PORT) (this machine only). Try:"
	@echo "  curl -s -XPOST localhost:$(PORT)/run -H 'Content-Type: application/json' -d '{\"value\":{\"name\":\"Ada\"},\"activation_id\":\"a1\"}'"
	ACTIONPROXY_HOST=127.0.0.1 $(BIN)/actionproxy serve --runtime python --port $(PORT) --init runtimes/python/examples/hello.py

test: dev
	$(BIN)/pytest

bench: dev
	$(BIN)/python bench/run.py

base-images:
	DOCKER=$(DOCKER) runtimes/base/build.sh

# the default images (latest: Python 3.11, Node.js 20), then the other language versions, built
# side by side: runtime,tag,the Dockerfile's base-image argument
VERSIONS := python,3.13,PYTHON_IMAGE=python:3.13-slim-trixie python,3.14,PYTHON_IMAGE=python:3.14-slim-trixie \
            nodejs,24,NODE_IMAGE=node:24-trixie-slim
DEFAULT_TAGS := python=3.11 nodejs=20

images: base-images
	for r in $(RUNTIMES); do \
	  extra=$$(echo "$(DEFAULT_TAGS)" | tr ' ' '\n' | sed -n "s/^$$r=//p"); \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -q $(SECRET) --build-arg VERSION=$(VERSION) \
	    -f runtimes/$$r/Dockerfile -t actionproxy/$$r:latest -t actionproxy/$$r:$(VERSION) \
	    $${extra:+-t actionproxy/$$r:$$extra} . || exit 1; \
	done
	pids=; for v in $(VERSIONS); do \
	  r=$${v%%,*}; rest=$${v#*,}; tag=$${rest%%,*}; arg=$${rest#*,}; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -q $(SECRET) --build-arg VERSION=$(VERSION) --build-arg $$arg \
	    -f runtimes/$$r/Dockerfile -t actionproxy/$$r:$$tag . >/dev/null & pids="$$pids $$!"; \
	done; for p in $$pids; do wait $$p || exit 1; done

clean:
	rm -rf $(VENV) bench/results .pytest_cache

#!/bin/sh
# The builder-stage step every runtime image shares: the proxy from the source in the current
# folder, installed in a venv at /opt/actionproxy without pip, and compiled to bytecode.
# Behind a TLS-intercepting proxy pip trusts the BuildKit secret `ca_bundle`, which is mounted
# for this step only and never stored in a layer.
set -eu
if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi
python3 -m venv /opt/actionproxy
/opt/actionproxy/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile .
/opt/actionproxy/bin/pip uninstall -y -q pip setuptools
/opt/actionproxy/bin/python -m compileall -q -j 0 /opt/actionproxy

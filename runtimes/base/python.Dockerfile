# Stand-in for an official python:<version>-slim image, for machines that cannot pull it: a
# Debian suite's own Python on a debootstrap minbase root (see build.sh). PYTHON names the
# package when it is not the suite's default python3 (sid's python3.14).
ARG DEBIAN_BASE=actionproxy/debian-minbase:bookworm
FROM ${DEBIAN_BASE}
ARG PYTHON=python3
ARG STANDS_FOR=python:3.11-slim-bookworm
# Check-Valid-Until off: a mirror that serves a frozen sid (or any suite) past its Release
# file's expiry date still installs
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "$PYTHON" "$PYTHON-venv" ca-certificates \
 && ln -sf "/usr/bin/$PYTHON" /usr/local/bin/python3 \
 && ln -sf "/usr/bin/$PYTHON" /usr/local/bin/python \
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.description="actionproxy stand-in for ${STANDS_FOR} (Debian's own Python)"
CMD ["python3"]

# Stand-in for the official python:3.11-slim-bookworm, for machines that cannot pull it:
# Debian bookworm's own Python 3.11 on a debootstrap minbase root (see build.sh).
ARG DEBIAN_BASE=actionproxy/debian-minbase:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip ca-certificates \
 && ln -s /usr/bin/python3 /usr/bin/python \
 && rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.description="actionproxy stand-in for python:3.11-slim-bookworm (Debian bookworm python3)"
CMD ["python3"]

# Stand-in for the official node:20-bookworm-slim, for machines that cannot pull it:
# Debian bookworm's own Node.js (18.x) on a debootstrap minbase root (see build.sh).
ARG DEBIAN_BASE=actionproxy/debian-minbase:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.description="actionproxy stand-in for node:20-bookworm-slim (Debian bookworm nodejs 18)"
CMD ["node"]

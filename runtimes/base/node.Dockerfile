# Stand-in for an official node:<version>-slim image, for machines that cannot pull it: a Debian
# suite's own Node.js on a debootstrap minbase root (see build.sh): bookworm's is 18.x (standing
# in for node:20), sid's 24.x.
ARG DEBIAN_BASE=actionproxy/debian-minbase:bookworm
FROM ${DEBIAN_BASE}
ARG STANDS_FOR=node:20-bookworm-slim
# Check-Valid-Until off: a mirror that serves a frozen sid (or any suite) past its Release
# file's expiry date still installs
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.description="actionproxy stand-in for ${STANDS_FOR} (Debian's own Node.js)"
CMD ["node"]

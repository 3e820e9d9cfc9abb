# An httpcoord node. docker-compose.yml runs three of them as one cluster.
#
#   docker build -t httpcoord:local .
#   docker run -d -p 127.0.0.1:8181:8181 -v httpcoord-data:/data httpcoord:local
#
# Build arguments:
#   BASE_IMAGE  any image with python3 (3.11+) and its venv module; the same
#               image is used to build and to run.
#   WHEELHOUSE  a directory inside the build context holding every dependency
#               as a wheel (pip wheel . -w DIR): the package is then installed
#               with no package index at all. Empty: installed from the index.
#
# Settings come from HTTPCOORD_* environment variables (every flag of
# `httpcoord serve` has one); the defaults below listen on all interfaces of
# the container and keep the data in the /data volume.
#
# Only features the classic builder knows are used (no BuildKit mounts), so
# that every docker and docker-compose builds it alike.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Marks this stage's images, so that tests can prune what builds leave behind.
LABEL org.httpcoord.stage=build
ARG WHEELHOUSE=
COPY . /src
# A venv, not the system site-packages: Debian's python refuses pip installs
# outside one (PEP 668), and the venv copies as one directory to the final stage.
RUN python3 -m venv /opt/httpcoord \
    && if [ -n "$WHEELHOUSE" ]; then \
           /opt/httpcoord/bin/pip install --no-cache-dir --disable-pip-version-check \
               --no-index --find-links "/src/$WHEELHOUSE" /src; \
       else \
           /opt/httpcoord/bin/pip install --no-cache-dir --disable-pip-version-check /src; \
       fi

# The final image holds the venv only: no source, no wheels, no build cache.
FROM ${BASE_IMAGE}
COPY --from=build /opt/httpcoord /opt/httpcoord
# A fixed uid and gid, so that a host directory mounted on /data can be
# chown'ed to them (10001:10001).
RUN groupadd --system --gid 10001 httpcoord \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home httpcoord \
    && mkdir -p /data && chown httpcoord:httpcoord /data
ENV PATH=/opt/httpcoord/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTPCOORD_LISTEN=0.0.0.0:8181 \
    HTTPCOORD_DATA_DIR=/data
USER httpcoord
# An empty named volume takes /data's owner from the image: httpcoord can write it.
VOLUME /data
# 8181: the client API. 8182: the peer listener (HTTPCOORD_PEER_LISTEN), which
# only the other members should reach.
EXPOSE 8181 8182
# Healthy once /ready says 200: the node knows a leader and has applied what
# it committed. The port is the one HTTPCOORD_LISTEN names.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('HTTPCOORD_LISTEN', ':8181').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2)"]
# docker stop sends SIGTERM: the node finishes the batch it is making durable
# and exits 0.
CMD ["httpcoord", "serve"]

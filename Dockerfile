# One httpcoord node. Data lives in /data (a volume); the client API on 8181.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md openapi.yaml ./
COPY httpcoord ./httpcoord
RUN pip install --no-cache-dir . && useradd --system --home /data httpcoord \
    && mkdir -p /data && chown httpcoord /data
USER httpcoord
VOLUME /data
EXPOSE 8181
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8181/ready', timeout=2)"
# SIGTERM (docker stop) shuts the node down cleanly.
CMD ["httpcoord", "serve", "--listen", "0.0.0.0:8181", "--data-dir", "/data"]

# keelfs: one image for every role (docs/deploy.md). Build: docker build -t keelfs:latest .
#   docker run keelfs:latest master --help
# The entry point is the `keelfs` command; the role and its flags are the arguments. Data lives
# under the volume /var/lib/keelfs (KEELFS_DATA: /var/lib/keelfs/data); the process runs as
# the unprivileged user keelfs (uid 10001).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY keelfs ./keelfs
RUN python -m venv /opt/keelfs && /opt/keelfs/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="keelfs" \
      org.opencontainers.image.description="keelfs: Raft-replicated sharded metadata, replicated blocks" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 keelfs \
 && useradd --system --uid 10001 --gid keelfs --home-dir /var/lib/keelfs --no-create-home \
      --shell /usr/sbin/nologin keelfs \
 && install -d -o keelfs -g keelfs -m 0700 /var/lib/keelfs \
 && install -d -m 0755 /etc/keelfs
COPY --from=build /opt/keelfs /opt/keelfs
ENV PATH=/opt/keelfs/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KEELFS_DATA=/var/lib/keelfs/data \
    KEELFS_HTTP_LISTEN=127.0.0.1:7080
USER keelfs
WORKDIR /var/lib/keelfs
VOLUME ["/var/lib/keelfs"]
# Raft, client API (a chunk server's data path), HTTP side (health, metrics, dashboard)
EXPOSE 7000 7001 7080
# /health of the node's own HTTP side (KEELFS_HTTP_LISTEN; HTTPS when KEELFS_TLS_DIR is set)
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "keelfs.web.healthcheck"]
ENTRYPOINT ["keelfs"]
CMD ["--help"]

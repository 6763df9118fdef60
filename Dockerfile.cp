# syntax=docker/dockerfile:1.7
# Sesame control plane (`sesame-controlplane serve`). No mitmproxy: the project with the `postgres`
# extra (asyncpg, for SESAME_DB=postgresql://...; SQLite needs nothing more).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Must equal [project] version in pyproject.toml (tests/k8s/test_images.py checks it).
ARG SESAME_VERSION=0.1.0

# --- builder: the project and every dependency as wheels (all have manylinux wheels: no compiler)
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane/ controlplane/
COPY proxy/ proxy/
RUN pip wheel --wheel-dir /wheels ".[postgres]"

# --- runtime: install the wheels only, run as an unprivileged user
FROM ${PYTHON_IMAGE}
ARG SESAME_VERSION
LABEL org.opencontainers.image.title="sesame-controlplane" \
      org.opencontainers.image.description="Sesame control plane and admission webhook" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${SESAME_VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SESAME_DB=/var/lib/sesame/sesame.db SESAME_LISTEN=0.0.0.0:8443
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "sesame[postgres]==${SESAME_VERSION}" \
    && groupadd --system --gid 10001 sesame \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sesame \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sesame
WORKDIR /var/lib/sesame
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["sesame-controlplane"]
CMD ["serve"]

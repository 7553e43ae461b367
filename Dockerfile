# syntax=docker/dockerfile:1.7
# One image for every dispatchd program: the control plane, the scheduler, the worker
# gateway, the worker (dispatchd-worker) and the migrations. The first argument chooses:
#
#   docker run IMAGE control-plane        (or: --build-arg SERVICE=scheduler sets the default)
#
# The base image is pinned by version tag. Released images are built from the digest the
# release workflow resolves for this tag (build argument PYTHON_IMAGE=...@sha256:...), which
# it records in the image's org.opencontainers.image.base.digest label; nothing here can
# reach a registry to resolve it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# No pip cache in a layer (the install script leaves caching to the environment).
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
# Every dependency ships a manylinux wheel for CPython 3.11: no compiler is needed, even here.
COPY pyproject.toml requirements.lock ./
COPY scripts/install-runtime.sh scripts/
COPY gen gen
COPY libs libs
COPY services services
RUN sh scripts/install-runtime.sh /opt/dispatchd /src

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=control-plane
LABEL org.opencontainers.image.title="dispatchd" \
      org.opencontainers.image.description="dispatchd control plane, scheduler, worker gateway, worker and migrations"
# No installer in the final image, and an unprivileged numeric user (runAsNonRoot checks the number).
RUN python -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel \
    && groupadd --system --gid 10001 dispatchd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin dispatchd
COPY --from=build /opt/dispatchd /opt/dispatchd
COPY --chmod=0755 scripts/container-entrypoint.sh /usr/local/bin/dispatchd
ENV PATH=/opt/dispatchd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DISPATCHD_SERVICE=${SERVICE}
USER 10001:10001
# gRPC: control plane, worker gateway, scheduler; 8081 is the plaintext health-only port
# (DISPATCHD_HEALTH_LISTEN) the Kubernetes probes use; 9464 serves Prometheus metrics
# (DISPATCHD_METRICS_LISTEN).
EXPOSE 50051 50052 50053 8081 9464
ENTRYPOINT ["/usr/local/bin/dispatchd"]

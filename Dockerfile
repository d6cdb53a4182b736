# Tracker Services image: one image, every process. The default command is the all-in-one
# server; Kubernetes runs tracker-collector, tracker-query, tracker-health, tracker-fetcher,
# tracker-worker and `trackerctl migrate` / `trackerctl geo load` from the same image
# (deploy/helm/tracker).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: dependencies (a cached layer), generated protobuf code, the package ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# The runtime venv gets only what runs; the code generator lives in a venv of its own.
RUN python -m venv /opt/venv && python -m venv /opt/tools
WORKDIR /src
# Run-time dependencies, pinned (scripts/lock.py): this layer is rebuilt only when the lock
# changes, not on every change of the code.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir -r requirements.lock
# protoc for the generated code: the grpcio-tools `make proto` uses (requirements-build.lock),
# with grpcio and protobuf of the lock (generated stubs refuse an older runtime).
COPY requirements-build.lock ./
RUN /opt/tools/bin/pip install --no-cache-dir -c requirements.lock -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY scripts/gen_proto.py ./scripts/
COPY src ./src
# Generated code (src/tracker) is not in git: make it here, as `make proto` does; then the
# package itself, without resolving dependencies again (the lock has them all).
# (Only the uninstall may fail: the venv has no wheel; a failed generation or install fails
# the build.)
RUN /opt/tools/bin/python scripts/gen_proto.py \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps . \
 && { /opt/venv/bin/pip uninstall -y -q pip setuptools wheel || true; }

# --- runtime: the venv only, no build tools, as a non-root user --------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRACKER_BIND_HOST=0.0.0.0
# The base image's own pip/setuptools/wheel are build tools too.
RUN { python -m pip uninstall -y -q pip setuptools wheel || true; } \
 && groupadd --system --gid 10001 tracker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tracker
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# collector, query, health (grpc.health.v1), Prometheus /metrics
EXPOSE 9000 8000 5000 9464
CMD ["tracker-server"]

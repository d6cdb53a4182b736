# Tracker Services image: one image, every process. The default command is the all-in-one
# server; Kubernetes runs tracker-collector, tracker-query, tracker-health and
# `trackerctl migrate` from the same image (deploy/helm/tracker).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: generate the protobuf code and install the package into a venv --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
# Generated code (src/tracker) is not in git: make it here, as `make proto` does.
RUN pip install --no-cache-dir grpcio-tools \
 && python scripts/gen_proto.py \
 && pip install --no-cache-dir .

# --- runtime: the venv only, as a non-root user --------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRACKER_BIND_HOST=0.0.0.0
RUN groupadd --system --gid 10001 tracker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tracker
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
# collector, query, health
EXPOSE 9000 8000 5000
CMD ["tracker-server"]

#!/usr/bin/env bash
# Idempotent set-up for `make run` and `make test`, on this machine or a fresh Debian one:
# system packages (PostgreSQL + PostGIS, Redis, jq, npm), running servers, the venv, buf,
# generated code, the database and its migrations. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_VERSION="${PG_VERSION:-15}"
PG_PORT="${PG_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
PYTHON="${PYTHON:-python3}"
VENV=.venv
STATE=.state
mkdir -p "$STATE"

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- system packages ----------------------------------------------------------------------
missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing+=("$1"); }
need_pkg "postgresql-$PG_VERSION"
need_pkg "postgresql-$PG_VERSION-postgis-3"
command -v redis-server >/dev/null || need_pkg redis-server
command -v jq >/dev/null || need_pkg jq
command -v npm >/dev/null || need_pkg npm
command -v make >/dev/null || need_pkg make
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_pkg python3-venv
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL -----------------------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
if ! pg_up; then
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$PG_VERSION main$"; then
    say "creating PostgreSQL $PG_VERSION cluster"
    as_root pg_createcluster "$PG_VERSION" main -p "$PG_PORT" >/dev/null
  fi
  hba="/etc/postgresql/$PG_VERSION/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -q "tracker-services: local trust" "$hba"; then
    # A development/CI machine: loopback connections as postgres without a password.
    say "allowing trusted loopback connections in $hba"
    as_root sed -i '1i # tracker-services: local trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL $PG_VERSION"
  as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { echo "PostgreSQL did not come up on 127.0.0.1:$PG_PORT" >&2; exit 1; }
fi

# --- Redis ---------------------------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p /tmp/tracker-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /tmp/tracker-redis --logfile /tmp/tracker-redis/redis.log
  for _ in $(seq 1 40); do redis_up && break; sleep 0.25; done
  redis_up || { echo "Redis did not come up on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
fi

# --- Python environment -----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
deps_hash=$(cat pyproject.toml requirements.lock scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -f "$STATE/deps-$deps_hash" ]; then
  say "installing Python packages"
  "$VENV/bin/pip" install -q --upgrade pip
  # The run-time packages at the versions the image ships (requirements.lock, `make lock`).
  "$VENV/bin/pip" install -q -c requirements.lock -e '.[dev]'
  # helm-sdkpy declares Python >= 3.12 but works on 3.11: real Helm for `helm lint` in tests.
  "$VENV/bin/pip" install -q --ignore-requires-python 'helm-sdkpy==0.1.32'
  rm -f "$STATE"/deps-*
  touch "$STATE/deps-$deps_hash"
fi

# --- buf (lint of the API) ------------------------------------------------------------------
if [ ! -x .tools/node_modules/.bin/buf ]; then
  say "installing buf"
  npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
fi

# --- generated code ---------------------------------------------------------------------------
proto_hash=$(cat proto/tracker/v1/*.proto scripts/gen_proto.py | sha256sum | cut -c1-16)
if [ ! -f "$STATE/proto-$proto_hash" ] || [ ! -d src/tracker/v1 ]; then
  say "generating protobuf code"
  "$VENV/bin/python" scripts/gen_proto.py
  rm -f "$STATE"/proto-*
  touch "$STATE/proto-$proto_hash"
fi

# --- database ---------------------------------------------------------------------------------
if [ "${SKIP_MIGRATE:-0}" != 1 ]; then
  "$VENV/bin/trackerctl" migrate --create-database
  # GeoNames cities for nearest-city geocoding (issue 6); once per database.
  "$VENV/bin/trackerctl" geo load --if-empty
fi
say "ready"

#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes .venv and installs the
# package with its test and dev extras; as root with apt-get, also Debian's
# chromium (browser tests), rabbitmq-server (AMQP tests) and redis-server (Redis
# store tests) when missing; then runs pytest. The README and docs/quickstart.md
# say the same (tests/test_rough_edges.py holds them to it).
# Extra arguments go to pytest, e.g. scripts/test.sh -k reloader.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test,dev]"
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium: the browser tests will be skipped" >&2
fi
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # The AMQP tests start their own broker from it (tests/support/servers/rabbitmq.py); the
    # package's service is not started (policy-rc.d or no init here, and unused).
    echo "installing Debian's rabbitmq-server for the AMQP tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null) \
        || echo "could not install rabbitmq-server: the AMQP tests will be skipped (and fail under CI)" >&2
fi
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # The Redis store's tests start a real redis-server (never an imitation); under CI
    # (CI set) they fail without one instead of skipping.
    echo "installing Debian's redis-server for the Redis store's tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
        || echo "could not install redis-server: the Redis tests will be skipped (or fail under CI)" >&2
fi
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# CI: build the sdist and the wheel as a user's pip would, check their metadata
# (twine check --strict), install the wheel into a fresh venv and look at what
# arrived: a file missing from the wheel (py.typed, a template, the LICENSE,
# the pytest plugin's entry point, a Lua script) fails here, not in a user's project.
# Uses .venv's build and twine (the dev extra): run scripts/test.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PY" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
"$PY" -m twine check --strict "$tmp"/dist/*

sdist=$(ls "$tmp"/dist/*.tar.gz)
wheel=$(ls "$tmp"/dist/*.whl)
listing=$(tar tzf "$sdist")  # not piped into grep -q: pipefail would see tar's SIGPIPE
for f in LICENSE README.md CHANGELOG.md pyproject.toml .readthedocs.yaml flask_memqueue/py.typed; do
    grep -qx "[^/]*/$f" <<<"$listing" || { echo "the sdist lacks $f" >&2; exit 1; }
done

"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$wheel" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$tmp/venv/bin/python" -m pip show -q flask-memqueue >/dev/null || { echo "the wheel did not install" >&2; exit 1; }
# Run from the temporary directory, so the import finds the installed copy, not this checkout.
(cd "$tmp" && "$tmp/venv/bin/python" - <<'PY'
import importlib.metadata as md
from importlib.resources import files

import flask_memqueue
from flask_memqueue import MemQueue  # the lazy re-exports resolve

pkg = files("flask_memqueue")
assert "site-packages" in str(pkg), f"imported from {pkg}, not from the installed wheel"
assert pkg.joinpath("py.typed").is_file(), "py.typed is missing: type checkers would ignore the hints"
templates = sorted(p.name for p in pkg.joinpath("templates", "memqueue").iterdir())
for name in ("base.html", "dashboard.html", "error.html", "job.html", "sign_in.html"):
    assert name in templates, f"template {name} is missing from the wheel: {templates}"
dist = md.distribution("flask-memqueue")
assert dist.metadata["License-Expression"] == "BSD-3-Clause", dist.metadata["License-Expression"]
licenses = [f for f in dist.files or [] if f.name == "LICENSE"]
assert licenses and "BSD 3-Clause" in licenses[0].read_text(), "the LICENSE file is missing from the wheel"
plugins = [ep for ep in md.entry_points(group="pytest11") if ep.value == "flask_memqueue.pytest_plugin"]
assert plugins, "the pytest11 entry point of the pytest plugin is missing"
assert pkg.joinpath("pytest_plugin.py").is_file()  # not imported: pytest is not installed here
commands = [ep for ep in md.entry_points(group="flask.commands") if ep.value == "flask_memqueue.cli:memqueue_cli"]
assert commands, "the flask.commands entry point of 'flask memqueue' is missing"
from flask_memqueue.extras import install_hint

hint = install_hint("redis")  # installed from the wheel's path: the hint names that file
assert hint.startswith('pip install "/') and hint.endswith('.whl[redis]"'), hint
assert MemQueue.__module__ == "flask_memqueue.extension"
# The Redis store's Lua scripts are package data: every one in the wheel, loaded through
# importlib.resources from the installed copy (redis-py is not installed here: not needed to read them).
from flask_memqueue.storage.redis.scripts import NAMES, sources

lua = sorted(p.name for p in pkg.joinpath("storage", "redis", "lua").iterdir() if p.name.endswith(".lua"))
missing = sorted({f"{n}.lua" for n in (*NAMES, "prelude")} - set(lua))
assert not missing, f"Lua scripts missing from the wheel: {missing}"
assert sorted(sources()) == sorted(NAMES) and all("P = keys, args, keys[1]" in s and "bind(K0, A0)" in s for s in sources().values())
# The public storage contract suite is in the wheel (not imported: pytest is not installed here).
assert pkg.joinpath("testing", "storage.py").is_file() and pkg.joinpath("testing", "__init__.py").is_file()
# The built-in backends are found without entry points of this package's own.
ours = [ep.value for ep in md.entry_points(group="flask_memqueue.storage") if ep.value.startswith("flask_memqueue.")]
assert not ours, ours
from flask_memqueue.storage import available_schemes

assert {"memory", "sqlite", "redis", "rediss", "unix", "postgresql", "postgres", "postgresql+psycopg"} <= set(
    available_schemes()), available_schemes()
# The PostgreSQL backend is a package of the wheel too; its exceptions and its schema's SQL need
# no driver (psycopg is not installed here), as the re-exports from flask_memqueue promise.
import sys

from flask_memqueue import PostgresUnavailable, SchemaError, StorageError
from flask_memqueue.storage.postgres import SCHEMA_VERSION, schema_sql

assert issubclass(PostgresUnavailable, StorageError) and issubclass(SchemaError, StorageError)
assert PostgresUnavailable.__module__ == "flask_memqueue.storage.postgres.errors", PostgresUnavailable.__module__
assert "CREATE TABLE" in schema_sql() and SCHEMA_VERSION >= 1
assert "psycopg" not in sys.modules, "importing the PostgreSQL backend imported psycopg"
print(f"flask-memqueue {flask_memqueue.__version__}: the wheel installs and imports; py.typed,"
      f" {len(templates)} templates, {len(lua)} Lua scripts, the PostgreSQL backend, LICENSE, the pytest plugin"
      " and the storage contract suite are in it")
PY
)

"""The Lua of the Redis store: package data (``lua/*.lua``), read once per process.

Every change of a job is one call, atomic in Redis. ``lua/prelude.lua`` holds
the data layout, the key names and the helpers that keep the indexes and
counters; every other file is the body of one call. They are put together in
two ways, here only:

- **a library of Redis functions** (Redis 7 and later; ``FUNCTION LOAD``,
  ``FCALL``): the prelude runs once, when the library loads, so a call pays
  for its own work only (an enqueue costs the server about half what the same
  script costs). The library's name carries a hash of its code, so two
  versions of this package on one server each call their own.
- **one script per call** (``EVALSHA``), for a server without functions
  (Redis 6.2): the prelude, then the body, run on every call.

The sources are read with :mod:`importlib.resources` (so they work from a
wheel, a zip or a checkout) once per process.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

#: Every call the store makes, by the name of its file in ``lua/``.
NAMES = (
    "insert", "claim", "save", "transition", "take_over", "list", "count", "busy", "next_eta", "owners",
    "running_of", "prune", "purge", "remove_waiting", "queue_counts", "renew", "progress", "insert_unique",
    "claim_tick", "abort", "aborts", "insert_all", "delete_finished", "workflow", "transition_many",
    "limits", "load",
)
#: The calls that write: with ``wait_replicas``, each is followed by ``WAIT`` in the same round trip.
WRITES = frozenset({"insert", "insert_unique", "claim_tick", "claim", "save", "transition", "take_over",
                    "remove_waiting", "purge", "abort", "insert_all", "delete_finished", "workflow",
                    "transition_many", "limits"})


def _read(name: str) -> str:
    folder = files(__package__ or __name__.rpartition(".")[0]).joinpath("lua")
    return folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def sources() -> dict[str, str]:
    """Each call as a script of its own (``EVALSHA``): the prelude, then its body."""
    prelude = _read("prelude")
    return {name: f"local K0, A0 = KEYS, ARGV\n{prelude}\nbind(K0, A0)\n{_read(name)}" for name in NAMES}


@cache
def library() -> tuple[str, dict[str, str]]:
    """The library of Redis functions: its code (``FUNCTION LOAD``), and each call's function name."""
    parts = [_read("prelude")]
    for name in NAMES:
        parts.append(f"redis.register_function('@{name}', function(keys, args)\nbind(keys, args)\n"
                     f"{_read(name)}\nend)")
    code = "\n".join(parts)
    lib = "memqueue_" + hashlib.sha1(code.encode()).hexdigest()[:12]  # noqa: S324 - a name, not a secret
    names = {name: f"{lib}_{name}" for name in NAMES}
    code = code.replace("redis.register_function('@", f"redis.register_function('{lib}_")
    return f"#!lua name={lib}\n{code}", names


__all__ = ["NAMES", "WRITES", "library", "sources"]

"""The Lua scripts of the Redis store: package data (``lua/*.lua``), read once per process.

Every change of a job is one script, atomic in Redis. Each script is the
prelude (``lua/prelude.lua``: the data layout, key names, and the helpers
that keep the indexes and counters) followed by its own file; the two that
add one job (``insert_unique``, ``claim_tick``) also get ``lua/add_one.lua``
in between. That composition is written here only. The sources are read
with :mod:`importlib.resources` (so they work from a wheel, a zip or a
checkout) once per process; each store registers them once on its client.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

#: Every script the store runs, by the name of its file in ``lua/``.
NAMES = (
    "insert", "claim", "save", "transition", "take_over", "list", "count", "busy", "next_eta", "owners",
    "running_of", "prune", "purge", "remove_waiting", "queue_counts", "renew", "progress", "insert_unique",
    "claim_tick",
)
#: The shared parts a script needs between the prelude and its own file.
_PARTS: dict[str, tuple[str, ...]] = {"insert_unique": ("add_one",), "claim_tick": ("add_one",)}


@cache
def sources() -> dict[str, str]:
    """Each script's full source: the prelude, its shared parts, its own file."""
    folder = files(__package__ or __name__.rpartition(".")[0]).joinpath("lua")

    def read(name: str) -> str:
        return folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")

    prelude = read("prelude")
    return {name: "\n".join([prelude, *(read(part) for part in _PARTS.get(name, ())), read(name)])
            for name in NAMES}


__all__ = ["NAMES", "sources"]

"""Redis key names under one prefix: the base of each owner's key module (results, farm, paper)."""

from __future__ import annotations

from backfarm.errors import ConfigError

DEFAULT_PREFIX = "backfarm"


class KeySpace:
    """Keys ``{prefix}:{part}:...`` with the variable part last, so no id or value can make two keys collide."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError(f"invalid Redis key prefix {prefix!r}: it must be non-empty, without spaces")
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        """``{prefix}:{parts[0]}:{parts[1]}...``."""
        return ":".join((self.prefix, *parts))

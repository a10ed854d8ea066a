"""Content-hash ids: canonical JSON and the short BLAKE2b digests that job, batch and sweep ids are made of."""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID_LENGTH = 24
"""Hex characters kept from the BLAKE2b digest (96 bits)."""


def canonical_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the basis of every id and hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(payload: Any, length: int = ID_LENGTH) -> str:
    """Hex digest of the canonical JSON of ``payload``."""
    return text_hash(canonical_json(payload), length)


def text_hash(text: str, length: int = ID_LENGTH) -> str:
    """:func:`short_hash` of a payload whose canonical JSON is ``text``."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]

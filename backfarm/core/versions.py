"""Every version that enters an identity (a job id or a result hash), in one place.

Bump one only when an issue asks for it, at most once per landing, and keep old stores and caches readable: a job
id that changes makes every stored result of that job unreachable (it is recomputed under the new id).
"""

from __future__ import annotations

ENGINE_VERSION = "1"
"""The fill model and the metric definitions (:mod:`backfarm.engine`); part of every job id and result hash."""
INTERFACE_VERSION = "1"
"""The strategy contract (:mod:`backfarm.strategies.base`); part of every job id."""

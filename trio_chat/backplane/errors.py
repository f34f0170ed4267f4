"""`BackplaneError`, importable without loading the Redis client (valkey-glide
takes most of a second to import, which `serve` without a backplane should not pay)."""

from __future__ import annotations

from ..core.errors import TrioChatError


class BackplaneError(TrioChatError):
    """The Redis server failed a request, or could not be reached."""

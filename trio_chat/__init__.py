"""trio-chat: a real-time chat server on Trio's structured concurrency."""

from __future__ import annotations

__version__ = "0.1.0"

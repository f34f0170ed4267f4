"""The root of trio-chat's own exceptions.

Every exception the package defines derives from `TrioChatError`, so a caller
embedding the server can tell "trio-chat refused or failed this" from a bug
anywhere else with one `except`. Each subclass carries what its handler needs
to answer, next to where it is raised: `ProtocolError` its error code
(protocol.py), `UpgradeRefused` and `BadRequest` their HTTP status
(`core.websocket`, `server.http`), `SettingError` the setting and where its value came
from (config.py). Pure: no imports.
"""

from __future__ import annotations


class TrioChatError(Exception):
    """Base class of every exception trio-chat defines."""

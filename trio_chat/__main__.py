"""`python -m trio_chat` is `trio-chat`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())

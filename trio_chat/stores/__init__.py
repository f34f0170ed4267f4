"""Where histories are kept, behind `core.history.HistoryStore`.

* `sqlite` -- the embedded default: durable history in one SQLite file,
  written behind the hub in batches.

The in-memory store (`:memory:`) is pure and lives in `core.history`.
"""

"""Schema migrations for Pony: a snapshot of the declared models, autodetected entity-level operations in
versioned migration files, and per-backend DDL planned from Pony's own mapping (issue #16, in progress)."""

from __future__ import annotations

__all__: list[str] = []

"""Security helpers: sensitive-data declarations and masking (the key ring and crypto live here too)."""

from __future__ import annotations

from .sensitive import is_sensitive, mask, sensitive, sensitive_names

__all__ = ["is_sensitive", "mask", "sensitive", "sensitive_names"]

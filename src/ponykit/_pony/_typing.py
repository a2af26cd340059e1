"""Names for Pony's untyped classes, used in annotations across the package."""

from typing import Any

Entity = Any  # a Pony entity class; Pony ships no type information
Attribute = Any
SessionCache = Any

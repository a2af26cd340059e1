"""ponykit's pytest plugin (registered through the ``pytest11`` entry point).

It only defines fixtures: nothing runs unless a test asks for one.
"""

from __future__ import annotations

__all__: list[str] = []

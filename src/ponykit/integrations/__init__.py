"""Web framework integrations: one db_session per request, done right.

* :mod:`ponykit.integrations.fastapi` (``pip install ponykit[fastapi]``): ``PonyRoute``, ``install(app)``,
  ``Page``/``CursorPage`` response models, ``async_ok`` for async endpoints that use
  :func:`ponykit.run_in_session`, ``install(app, principal=fn)`` and ``check_if_match``/``set_etag``;
* :mod:`ponykit.integrations.flask` (``pip install ponykit[flask]``): ``Pony(app)``, a replacement for
  ``pony.flask`` that rolls back a failed request (``Pony(app, principal=fn)``).

Each submodule imports its framework; this package imports none, so ``import ponykit`` never needs them.
``docs/web.md`` explains the design and the numbers behind it.
"""

from __future__ import annotations

__all__: list[str] = []

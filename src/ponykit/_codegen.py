"""The one place ponykit compiles generated code.

Several fast paths (row encoders for bulk writes, ``to_dict`` methods, the query fast path, prepared page
queries, materializers) are Python functions written out per entity and compiled once. They all go
through :func:`build_function`, so that generated code is never anonymous:

* it is compiled under a named filename, ``<ponykit:LABEL#N>``, and its source is kept in
  :mod:`linecache`, so a traceback through it shows the generated line, as for any other Python code;
* the source stays on the function as ``__ponykit_source__`` (:func:`source_of` returns it), and the
  logger ``ponykit.codegen`` records it at DEBUG when it is compiled.

The text given here must be built from identifiers ponykit checked and integer offsets only, never from
user values: values reach generated code through ``namespace``.
"""

from __future__ import annotations

import itertools
import linecache
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["build_function", "source_of"]

_log = logging.getLogger("ponykit.codegen")
_numbers = itertools.count(1)


def build_function(
    name: str, source: str | Sequence[str], namespace: Mapping[str, Any], *, label: str
) -> Callable[..., Any]:
    """Compile ``source`` (text or lines) that defines the function ``name``, and return the function.

    ``namespace`` holds the globals the generated code uses (it is copied, not changed). ``label`` says
    what was generated (``"bulk.encode_row Book"``); it names the code in tracebacks and in the log.
    """
    text = source if isinstance(source, str) else "\n".join(source)
    if not text.endswith("\n"):
        text += "\n"
    filename = f"<ponykit:{label}#{next(_numbers)}>"
    code = compile(text, filename, "exec")
    scope = dict(namespace)
    exec(code, scope)  # noqa: S102 - the one exec in ponykit; see the module docstring for what it runs
    function: Callable[..., Any] = scope[name]
    # mtime None: linecache.checkcache() keeps entries that have no file behind them.
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    function.__ponykit_source__ = text  # type: ignore[attr-defined]
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("generated %s (%s):\n%s", label, filename, text)
    return function


def source_of(function: Any) -> str | None:
    """The generated source of ``function`` (or of the function behind a bound method), or None."""
    target = getattr(function, "__func__", function)
    source = getattr(target, "__ponykit_source__", None)
    return source if isinstance(source, str) else None

"""Helpers the publishers share: the redacted broker name, error text without secrets, the extras."""

from __future__ import annotations

import importlib
from types import ModuleType
from urllib.parse import unquote, urlsplit

from ..binding import redact_url
from ..errors import ConfigurationError, PublishError

__all__ = ["import_extra", "publish_error", "scrub"]


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (a broker client), or say which ponykit extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - the dev extra installs every client
        raise ConfigurationError(
            f"{feature} needs the {module} package: pip install 'ponykit[{extra}]'"
        ) from exc


def _secrets(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:  # a malformed port: urlsplit still gave no password we could hide
        return []
    if not password:
        return []
    return [s for s in {password, unquote(password)} if s]


def scrub(text: str, url: str) -> str:
    """``text`` (a client library's error message) with the password of ``url`` replaced by ``***``.

    Client libraries sometimes echo their connection parameters in exceptions; ponykit's own messages
    never contain the password, and a library's text passes through this before it is shown.
    """
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return redact_url(text) if "://" in text else text


def publish_error(broker: str, url: str, what: str, exc: BaseException | None = None) -> PublishError:
    """A :class:`PublishError` naming the broker (``broker`` is already redacted) and the failure."""
    detail = f": {type(exc).__name__}: {scrub(str(exc), url)}" if exc is not None else ""
    return PublishError(f"{broker}: {what}{detail}")

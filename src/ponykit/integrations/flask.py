"""Flask integration (``pip install ponykit[flask]``): ``Pony(app)``, a replacement for ``pony.flask``.

::

    app = Flask(__name__)
    ponykit.integrations.flask.Pony(app)

Each request (but static files) runs in one ``db_session``, opened before the first ``before_request``
function and ended in the same thread:

* a request whose view (or a ``before_request`` function) raised is **rolled back**, whatever Flask
  answers: an error handler's response, an ``abort(404)``, or the 500 Flask makes of an unhandled
  exception. So is a response with a 5xx status. ``pony.flask`` commits such a request: it ends the
  session without the exception's type, which Pony reads as success;
* any other request is **committed before the response leaves**, in an ``after_request`` function:
  a failing commit becomes Flask's 500 instead of a 200 whose data was lost. ``on_commit`` callbacks run
  right after the commit, before the response is sent.

``Pony(app, principal=fn)`` makes ``fn(request)`` the acting principal
(:func:`ponykit.security.set_principal`) of each request, evaluated in its session (so ``fn`` may load a
User entity) before the app's ``before_request`` functions, and reset when the request ends.

Flask does not tell an ``after_request`` function that an exception was handled; ``Pony(app)`` learns it
by wrapping ``handle_user_exception`` and ``handle_exception`` of this app instance (not of the Flask
class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from pony.orm import commit, db_session, rollback

from ..errors import OptionError
from ..security import reset_principal, set_principal
from ._replicas import ReplicaReads, RequestPin, replica_reads

__all__ = ["Pony", "ReplicaReads"]

_G_SESSION = "_ponykit_session"
_G_FAILED = "_ponykit_failed"
_G_DONE = "_ponykit_done"
_G_PRINCIPAL = "_ponykit_principal_token"
_G_PIN = "_ponykit_pin"


class Pony:
    """One ``db_session`` per Flask request: commit before the response, roll back a failed request.

    ``Pony(app)`` or ``Pony()`` then ``init_app(app)``. ``session_options`` are passed to
    ``db_session(...)`` (for example ``serializable=True``). Static files (the ``static`` endpoint of the
    app and of blueprints) get no session.

    ``principal`` is a function ``fn(request) -> principal or None`` (for example the user named by a
    verified token): its result is the acting principal of the request (``requires()``, ``scoped()``, the
    ``Audited`` actor read it), set in the request's thread and reset at its teardown, so it never reaches
    the next request the thread serves. An exception of ``fn`` fails (and rolls back) the request.

    ``replicas=True`` (or a ``ReplicaReads``): GET and HEAD requests run as replica sessions on
    Databases bound with ``replicas=``; each request carries its read-your-writes pin in a cookie and
    header (see docs/scaling.md).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        principal: Callable[[Any], Any] | None = None,
        replicas: ReplicaReads | bool | None = None,
        **session_options: Any,
    ) -> None:
        if principal is not None and not callable(principal):
            raise OptionError(
                f"Pony(app, principal=...) takes a function of the request returning the principal or "
                f"None, got {type(principal).__name__}"
            )
        self.principal = principal
        self.replicas = replica_reads(replicas)
        self.session_options = session_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the request hooks on ``app``."""
        if not isinstance(app, Flask):
            raise OptionError(f"Pony(app) takes a flask.Flask app, got {type(app).__name__}")
        # First in line: the session must be open for the app's own before_request functions.
        app.before_request_funcs.setdefault(None, []).insert(0, self._enter)
        app.after_request(self._finish)
        app.teardown_request(self._exit)
        self._watch_exceptions(app)

    @staticmethod
    def _watch_exceptions(app: Flask) -> None:
        # Every exception raised by a before_request function or a view goes through
        # handle_user_exception; an unhandled one then through handle_exception (the 500).
        for name in ("handle_user_exception", "handle_exception"):
            original = getattr(app, name)

            def watched(exc: BaseException, _original: Any = original) -> Any:
                if getattr(g, _G_SESSION, None) is not None:
                    setattr(g, _G_FAILED, True)
                return _original(exc)

            setattr(app, name, watched)

    def _enter(self) -> None:
        endpoint = request.endpoint or ""
        if endpoint == "static" or endpoint.endswith(".static"):
            return
        if self.replicas is not None:
            pin = RequestPin(self.replicas, request.method, request.cookies, request.headers)
            pin.enter()  # before the session: a GET's session takes a replica's connection
            setattr(g, _G_PIN, pin)
        session = db_session(**self.session_options) if self.session_options else db_session
        session.__enter__()
        setattr(g, _G_SESSION, session)
        setattr(g, _G_FAILED, False)
        if self.principal is not None:
            # After the session opened (fn may query); an exception fails the request as a view's would.
            setattr(g, _G_PRINCIPAL, set_principal(self.principal(request)))

    def _finish(self, response: Response) -> Response:
        session = getattr(g, _G_SESSION, None)
        if session is None or getattr(g, _G_DONE, False):
            return response
        setattr(g, _G_DONE, True)
        if getattr(g, _G_FAILED, False) or response.status_code >= 500:
            rollback()
        else:
            try:
                commit()
            except BaseException:
                setattr(g, _G_FAILED, True)
                raise  # Flask answers 500; the teardown rolls back and ends the session
            pin: RequestPin | None = getattr(g, _G_PIN, None)
            token = pin.token() if pin is not None else None
            if pin is not None and token is not None:
                if pin.options.header is not None:
                    response.headers[pin.options.header] = token
                if pin.options.cookie is not None:
                    response.set_cookie(
                        pin.options.cookie, token, max_age=pin.options.max_age, httponly=True, samesite="Lax"
                    )
        return response

    def _exit(self, exc: BaseException | None) -> None:
        try:
            self._end_session(exc)
        finally:
            pin: RequestPin | None = getattr(g, _G_PIN, None)
            if pin is not None:
                setattr(g, _G_PIN, None)
                pin.exit()

    def _end_session(self, exc: BaseException | None) -> None:
        token = getattr(g, _G_PRINCIPAL, None)
        if token is not None:
            setattr(g, _G_PRINCIPAL, None)
            reset_principal(token)  # this thread serves other requests next: nobody acts there yet
        session = getattr(g, _G_SESSION, None)
        if session is None:
            return
        setattr(g, _G_SESSION, None)
        failed = exc is not None or getattr(g, _G_FAILED, False)
        if failed:
            error = exc if exc is not None else RuntimeError("ponykit: the request failed")
            # With the exception's type, Pony's db_session rolls back (pony.flask passes none: a commit).
            session.__exit__(type(error), error, error.__traceback__)
        else:
            session.__exit__(None, None, None)

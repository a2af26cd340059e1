"""FastAPI integration (``pip install ponykit[fastapi]``): one ``db_session`` per request, in its thread.

::

    app = FastAPI()
    app.router.route_class = ponykit.integrations.fastapi.PonyRoute   # or APIRouter(route_class=PonyRoute)
    ponykit.integrations.fastapi.install(app, db=db, connections=8)

    @app.post("/items", status_code=201)
    def create_item(body: ItemIn) -> ItemOut:          # a plain def: runs in one db_session
        item = Item(**body.model_dump())
        pk.on_commit(lambda: notify(item.id))           # after the commit, before the response
        return item                                     # converted to ItemOut inside the session

**Sync endpoints** of a :class:`PonyRoute` run on one of the process's session threads (the pool of
:func:`ponykit.run_in_session`, as many threads as the connection budget), inside one ``db_session``
opened and closed in that thread: the response model is built from the returned objects while the
session is open, then the session commits (``on_commit`` callbacks run, in that thread), and only then
is the response sent. Any exception rolls the whole request back, ``HTTPException`` included: a 4xx
raised after a write does not keep the write (return a response instead of raising when a write must
stay). Dependencies run where FastAPI runs them (other threads), so they get no session: load entities
in the endpoint, or open a ``db_session`` in the dependency for its own work.

**Async endpoints** (``async def``) run on the event loop, where a Pony query blocks every other request
(Pony's documented pattern). A PonyRoute refuses them when the route is registered, unless marked
:func:`async_ok`: an ``async def`` endpoint that does its database work through ``await
ponykit.run_in_session(fn, ...)`` (or none at all).

:func:`install` records the app's options, sets the connection budget, adds ``Server-Timing`` when asked
and registers the error handlers of :data:`~ponykit.integrations._problems.PROBLEMS` (RFC 9457 problem
details: ponykit ``ValidationError`` -> 422 with every field error, ``InvalidPage``/``InvalidCursor`` ->
400, Pony ``ObjectNotFound`` -> 404, ``OptimisticCheckError`` and ``VersionConflict`` -> 409, or 412 for a
request with ``If-Match``, ``PermissionDenied`` -> 403). ``install(app, principal=fn)`` makes
``fn(request)`` the acting principal of each request (:func:`ponykit.security.current_principal`).
:func:`check_if_match` and :func:`set_etag` make writes of ``Versioned`` objects conditional.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pony.orm import Database, db_session, flush
from pydantic import BaseModel, ConfigDict

from .._kit import attached_databases
from ..errors import ConfigurationError, OptionError
from ..security import reset_principal, set_principal
from ..transactions._async import run_in_session, session_executor, set_session_threads
from ._etags import check_if_match, set_etag
from ._pages import CursorLinks, CursorPage, Page, PageLinks
from ._problems import PROBLEM_JSON, PROBLEMS, ProblemType, find_problem, problem_for, status_of
from ._replicas import ReplicaReads, RequestPin, replica_reads
from ._timing import Endpoint, RequestTiming, listen, measuring, request_endpoint

__all__ = [
    "PROBLEMS",
    "PROBLEM_JSON",
    "CursorLinks",
    "CursorPage",
    "FieldErrorModel",
    "HTTPErrorBody",
    "Page",
    "PageLinks",
    "PonyRoute",
    "Problem",
    "ProblemType",
    "ReplicaReads",
    "RequestValidationBody",
    "async_ok",
    "check_if_match",
    "install",
    "problem_responses",
    "set_etag",
]

F = TypeVar("F", bound=Callable[..., Any])

_ASYNC_OK = "__ponykit_async_ok__"
_SYNC_ENDPOINT = "__ponykit_sync_endpoint__"
_STATE_KEY = "ponykit_web"


def async_ok(fn: F) -> F:
    """Mark an ``async def`` endpoint as allowed on a :class:`PonyRoute`.

    It promises that the endpoint does not query the database on the event loop: its database work goes
    through ``await ponykit.run_in_session(...)`` (or it has none). The endpoint runs unchanged, with no
    session of its own.
    """
    setattr(fn, _ASYNC_OK, True)
    return fn


@dataclass(frozen=True)
class _AppConfig:
    server_timing: bool
    problems: tuple[ProblemType, ...]
    databases: tuple[Database, ...]
    principal: Callable[[Request], Any] | None = None
    replicas: ReplicaReads | None = None


@dataclass
class _RequestState:
    config: _AppConfig | None
    timing: RequestTiming | None = field(default=None)
    request: Request | None = None


_state: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar(
    "ponykit_web_request", default=None
)


def _is_async(fn: Any) -> bool:
    target = inspect.unwrap(fn)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(fn):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004  # a callable object with an async __call__
    return call is not None and not inspect.isroutine(target) and inspect.iscoroutinefunction(call)


def _is_generator(fn: Any) -> bool:
    target = inspect.unwrap(fn)
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


class PonyRoute(APIRoute):
    """An ``APIRoute`` that runs each sync endpoint in one ``db_session`` on a session thread.

    Use it for a whole app (``app.router.route_class = PonyRoute``, before declaring routes) or a router
    (``APIRouter(route_class=PonyRoute)``). The app needs :func:`install`. See the module documentation
    for what happens on success and on error, and :func:`async_ok` for ``async def`` endpoints.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        original = getattr(endpoint, _SYNC_ENDPOINT, endpoint)  # a route copied from a wrapped one
        if _is_generator(original):
            raise ConfigurationError(
                f"PonyRoute {path!r}: the endpoint {_name(original)} is a generator (a streaming response); "
                "its items would be produced after the request's db_session has ended. Build the list "
                "inside the endpoint, or stream from a route that is not a PonyRoute and open a db_session "
                "in the generator"
            )
        if _is_async(original):
            if not getattr(original, _ASYNC_OK, False):
                raise ConfigurationError(
                    f"PonyRoute {path!r}: the endpoint {_name(original)} is `async def`. Pony queries block "
                    "the event loop (every other request waits for each query) and have no db_session "
                    "there. Make it a plain `def` (PonyRoute runs it in one db_session on a session "
                    "thread), or do its database work with `await ponykit.run_in_session(fn, ...)` and "
                    "mark it @ponykit.integrations.fastapi.async_ok"
                )
            wrapped = original
        else:
            wrapped = self._wrap(original)
        super().__init__(path, wrapped, **kwargs)

    def _wrap(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        route = self

        def call(kwargs: dict[str, Any], state: _RequestState) -> Any:
            # The whole request's database work, in this one thread: principal, endpoint, response model,
            # commit, on_commit callbacks. An exception anywhere in the block rolls it back.
            source = state.config.principal if state.config is not None else None
            token = None
            try:
                with measuring(state.timing), db_session:
                    # In the session, so that the principal function may load a User entity; reset only
                    # after the commit, which writes the Audited actor of writes flushed by it.
                    if source is not None and state.request is not None:
                        token = set_principal(source(state.request))
                    result = endpoint(**kwargs)
                    if not isinstance(result, Response):
                        result = route._validate_response(result)
            finally:
                # The thread serves other requests next (each in its own copied context, so nothing
                # could leak anyway): put the context back as it was.
                if token is not None:
                    reset_principal(token)
            return result

        @functools.wraps(endpoint)
        async def run(**kwargs: Any) -> Any:
            state = _state.get()
            if state is None or state.config is None:
                raise ConfigurationError(
                    f"PonyRoute {route.path!r}: the app serving it was not set up for ponykit; call "
                    "ponykit.integrations.fastapi.install(app, db=db, connections=N) when creating the app"
                )
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()
            task = functools.partial(context.run, call, kwargs, state)
            return await loop.run_in_executor(session_executor(), task)

        setattr(run, _SYNC_ENDPOINT, endpoint)
        return run

    def _validate_response(self, result: Any) -> Any:
        # FastAPI would build the response model after the endpoint returned, in another thread, once
        # the session is over: lazy attributes and collections would fail. Build it here instead; FastAPI
        # then re-checks a ready model instance, which costs little.
        response_field = self.response_field
        if response_field is None:
            return result
        flush()  # new objects get their database-assigned keys before the model reads them
        value, errors = response_field.validate(result, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=result)
        return value

    def get_route_handler(self) -> Callable[[Request], Any]:
        """The request handler, with this app's ponykit options in scope and ``Server-Timing`` added."""
        handler = super().get_route_handler()
        endpoint = Endpoint(f"{','.join(sorted(self.methods or ()))} {self.path_format}")
        # A sync endpoint's principal is set in its session thread (see _wrap); an async one's here.
        async_endpoint = getattr(self.endpoint, _SYNC_ENDPOINT, None) is None

        async def run(request: Request) -> Response:
            config = getattr(request.app.state, _STATE_KEY, None)
            timing = RequestTiming() if config is not None and config.server_timing else None
            token = _state.set(_RequestState(config, timing, request))
            named = request_endpoint.set(endpoint)
            acting = None
            pin = None
            if config is not None and config.replicas is not None:
                pin = RequestPin(config.replicas, request.method, request.cookies, request.headers)
                pin.enter()  # a GET reads from replicas; the client's pin token holds for the request
            pin_token = None
            try:
                if async_endpoint and config is not None and config.principal is not None:
                    # Not on the event loop: the principal function may query (a User entity).
                    who = await run_in_session(config.principal, request)
                    acting = set_principal(who)  # seen by the endpoint and its run_in_session calls
                response: Response = await handler(request)
                pin_token = pin.token() if pin is not None else None
            finally:
                if pin is not None:
                    pin.exit()
                if acting is not None:
                    reset_principal(acting)
                request_endpoint.reset(named)
                _state.reset(token)
            if timing is not None:
                response.headers["Server-Timing"] = timing.header()
            if pin_token is not None and pin is not None:
                _send_pin(response, pin_token, pin.options)
            return response

        return run


def _send_pin(response: Response, token: str, options: ReplicaReads) -> None:
    if options.header is not None:
        response.headers[options.header] = token
    if options.cookie is not None:
        response.set_cookie(options.cookie, token, max_age=options.max_age, httponly=True, samesite="lax")


def _problem_handler(table: tuple[ProblemType, ...]) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> Response:
        entry = find_problem(exc, table)
        if entry is None:  # registered for a base class whose entry was removed: let it be a 500
            raise exc
        status, _ = status_of(entry, request.headers)
        problem = problem_for(exc, entry, instance=request.url.path, headers=request.headers)
        return JSONResponse(problem, status_code=status, media_type=PROBLEM_JSON)

    return handle


def install(
    app: FastAPI,
    *,
    db: Database | Sequence[Database] | None = None,
    connections: int | None = None,
    server_timing: bool = False,
    problems: Iterable[ProblemType] = (),
    principal: Callable[[Request], Any] | None = None,
    replicas: ReplicaReads | bool | None = None,
) -> None:
    """Set ``app`` up for :class:`PonyRoute`: options, connection budget, error handlers, Server-Timing.

    ``connections`` is the connection budget: the number of session threads of the process
    (:func:`ponykit.set_session_threads`), hence the most connections each Database opens, shared with
    :func:`ponykit.run_in_session`. ``server_timing=True`` adds a ``Server-Timing`` header with the
    statement count and the database time of the request (``db``, attached, or every attached Database).
    SQL that runs on the event loop during a PonyRoute request (an ``@async_ok`` endpoint querying Pony
    directly) is logged as a warning naming the endpoint (logger ``ponykit.integrations``).
    ``problems`` adds entries before the default table :data:`PROBLEMS` (first match wins).

    ``principal`` is a function ``fn(request) -> principal or None`` evaluated once per PonyRoute request
    and made the acting principal (:func:`ponykit.security.set_principal`) for it, reset afterwards: for a
    sync endpoint in its session thread, inside its ``db_session`` (``fn`` may load a User entity), before
    the endpoint runs; for an ``@async_ok`` endpoint in a session of its own (:func:`ponykit.run_in_session`),
    then set in the request's context, where its ``run_in_session`` calls see it. ``requires()``,
    ``scoped()`` and the ``Audited`` actor read it. An exception of ``fn`` fails the request (raise
    ``PermissionDenied`` for a bad credential: a 403).

    ``replicas=True`` (or a :class:`ReplicaReads`): GET and HEAD requests run as replica sessions on
    Databases bound with ``replicas=``, and each request carries its read-your-writes pin in a cookie
    and header (see docs/scaling.md).
    """
    if not isinstance(app, FastAPI):
        raise OptionError(f"install() takes a fastapi.FastAPI app, got {type(app).__name__}")
    if principal is not None and not callable(principal):
        raise OptionError(
            f"install(principal=...) takes a function of the request returning the principal or None, "
            f"got {type(principal).__name__}"
        )
    if connections is not None:
        set_session_threads(connections)
    databases: tuple[Database, ...]
    if db is None:
        databases = tuple(attached_databases())
    elif isinstance(db, Database):
        databases = (db,)
    else:
        databases = tuple(db)
    if server_timing and not databases:
        raise ConfigurationError(
            "install(app, server_timing=True) needs an attached Database to time: call "
            "ponykit.attach(db) first, or pass db=db"
        )
    for database in databases:
        listen(database)  # Server-Timing figures, and the warning for SQL run on the event loop
    table = (*problems, *PROBLEMS)
    for entry in table:
        if not (isinstance(entry, ProblemType) and isinstance(entry.exc_type, type)):
            raise OptionError(
                f"install(problems=...) takes ProblemType entries (exception class, status, title), "
                f"got {entry!r}"
            )
    handler = _problem_handler(table)
    for exc_type in dict.fromkeys(entry.exc_type for entry in table):
        if issubclass(exc_type, Exception):  # Starlette handles Exception subclasses only
            app.add_exception_handler(exc_type, handler)
    reads = replica_reads(replicas)
    setattr(app.state, _STATE_KEY, _AppConfig(server_timing, table, databases, principal, reads))


class FieldErrorModel(BaseModel):
    """One field error of a 422 problem: FastAPI's own ``detail`` item shape (``loc``, ``type``, ``msg``)."""

    loc: list[str | int]
    type: str
    msg: str
    ctx: dict[str, Any] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, as :func:`install`'s handlers answer (for ``responses=`` in OpenAPI)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str | None = None
    errors: list[FieldErrorModel] | None = None


class RequestValidationBody(BaseModel):
    """FastAPI's own 422 body for a request that does not match its declared parameters."""

    detail: list[FieldErrorModel]


class HTTPErrorBody(BaseModel):
    """FastAPI's own body for an ``HTTPException`` (a 400 for a malformed JSON body, a 404 of routing)."""

    detail: Any


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem details for ``statuses`` (e.g. 404, 409, 422).

    Each status documents :class:`Problem` as ``application/problem+json`` (what :func:`install`'s
    handlers send), and FastAPI's own ``{"detail": ...}`` bodies as ``application/json`` beside it
    (request validation for 422, ``HTTPException`` otherwise).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model: Any = Problem | (RequestValidationBody if status == 422 else HTTPErrorBody)
        out[status] = {
            "model": model,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": "Problem details (RFC 9457)",
        }
    return out

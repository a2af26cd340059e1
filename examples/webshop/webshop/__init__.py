"""A small web shop on FastAPI and ponykit: ``uvicorn webshop.app:app`` (SQLite by default).

``WEBSHOP_DATABASE_URL`` names another database (``postgresql://...``, ``mysql://...``). What it shows:
``PonyRoute`` (one db_session per request, in the endpoint's thread), ``install(app)`` (connection
budget, problem details for every error, ``Server-Timing``), ``Page``/``CursorPage`` response models,
validation errors as one 422 with every problem, and ``on_commit`` (an email "sent" only once the order
is committed); models derived with ``pk.pydantic_model``, entity rules (``@pk.validates``, ``clean()``),
a ``Versioned`` product changed with ``If-Match``, and the acting principal taken from ``X-User``.
"""

"""The one door into Pony's internals.

Every use of a private Pony name lives in this package, behind small functions with their own tests
(``tests/_pony/``), so that a Pony upgrade is one package's work. The rest of ponykit asks
``_pony.name`` and never reaches into ``pony.orm.core`` itself. One module per area:

- ``database``: database state, sessions, provider interception, converter lists
- ``connection``: a session's connection lost inside a transaction that wrote; side connections
- ``entities``: entity metadata, encoding and decoding values, write tracking
- ``types``: custom attribute types and query-parameter normalization
- ``params``: query-parameter converters (by value type, and by the column a parameter is compared with)
- ``bulk`` and ``identity``: bulk writes, and identity-map upkeep after raw writes
- ``query`` and ``prefetch``: query shape and order, N+1 diagnosis, loading relations in bulk
- ``prepared``: page queries built by Pony once per shape and rebound per call
- ``cache``: stable query keys and rebuilding entities from cached rows
- ``serialize``: attribute listing and the raw rows of a query

Written against Pony 0.7.20; ``../shared/docs/pony-internals.md`` maps what is used. Nothing here patches
a Pony class for the whole process: provider methods are wrapped on one provider *instance*, converter
lists are shadowed on one provider *instance*, and write tracking is installed on the entity classes of
one ``Database``.
"""

from . import (
    bulk,
    cache,
    connection,
    database,
    entities,
    identity,
    model,
    params,
    prefetch,
    prepared,
    query,
    serialize,
    types,
)
from ._typing import Attribute, Entity, SessionCache
from .bulk import *  # noqa: F403
from .cache import *  # noqa: F403
from .connection import *  # noqa: F403
from .database import *  # noqa: F403
from .entities import *  # noqa: F403
from .identity import *  # noqa: F403
from .model import *  # noqa: F403
from .params import *  # noqa: F403
from .prefetch import *  # noqa: F403
from .prepared import *  # noqa: F403
from .query import *  # noqa: F403
from .serialize import *  # noqa: F403
from .types import *  # noqa: F403

# Private package: the rest of ponykit reaches these as ``_pony.name``.
__all__ = [
    "Attribute",
    "Entity",
    "SessionCache",
    *database.__all__,
    *connection.__all__,
    *entities.__all__,
    *model.__all__,
    *types.__all__,
    *params.__all__,
    *bulk.__all__,
    *identity.__all__,
    *query.__all__,
    *prefetch.__all__,
    *prepared.__all__,
    *cache.__all__,
    *serialize.__all__,
]

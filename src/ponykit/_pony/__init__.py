"""The one door into Pony's internals, one module per Pony concept.

Every use of a private Pony name lives in this package, behind small functions with their own tests
(``tests/_pony/``), so that a Pony upgrade is one package's work. The rest of ponykit asks
``_pony.name`` and never imports ``pony.orm.core`` (or ``dbapiprovider``, ``sqlbuilding``, ``ormtypes``)
itself, nor reads a Pony attribute's fields: it asks :func:`attr_info` for a frozen :class:`AttrInfo`.
``tests/_pony/test_door.py`` checks that. The modules, from the bottom up:

- ``model``: entity and attribute views (``EntityInfo``, ``AttrInfo``) and lookups on the mapping
- ``database``: provider facts, dialect, provider wrapping, converter lists, type normalization
- ``connection``: statements on a session's connection, a connection lost in a transaction, side connections
- ``sqlbuilder``: Pony's SQL builder: SQL operations, lookups, index DDL, query-parameter converters
- ``session``: session cache, depth, outside_session, flush, write hooks, identity-map upkeep
- ``savepoints``: savepoint statements, and the session snapshot a rollback to a savepoint puts back
- ``values``: validate, encode and decode values as Pony does; value round-trip checks
- ``encoders``: bulk value encoders, and the generated-source fragments that name Pony's private slots
- ``materialize``: the materializer: session objects from raw rows, generated once per row layout
- ``loading``: rebuilding entities from cached rows, raw rows of a query, loaded values
- ``cascade``: Pony's delete rules (cascade, set NULL, refuse) read from the mapping
- ``links``: many-to-many link tables, and loaded collections after link rows were written
- ``relations``: prefetch loaders: relations and lazy columns loaded in batches
- ``prepared``: prepared page queries: built by Pony once per shape, rebound per call
- ``queries``: query shape, order, SQL and fetch; raw filters; N+1 culprit; stable query keys
- ``explain``: the session's connection for EXPLAIN, the mapping read backwards (tables -> attributes)
- ``outer_transaction``: one shared connection in an outer transaction per test, table truncation
- ``pool``: the provider's connection pool: connections made and reset as it does, another pool in its place
- ``metadata``: the limits of an attribute's values and an entity's unique keys (test factories)
- ``entity_hooks``: save hooks on one entity class (the entity mixins' before/after flush hooks)
- ``predicates``: policy predicates ``(obj, principal)`` decompiled and OR-ed into ``Query.filter`` text
- ``rls``: row-level security settings applied in a session's transaction (PostgreSQL)
- ``routing``: which server a session's connection comes from: the read intent, replica routing hooks
- ``audit``: an object's stored and current column values, raw column decoding (the audit trail)
- ``offline``: mapping a Database without a server, or bound to a connection someone else owns (migrations)
- ``schema``: a mapped Database's physical schema (tables, columns, indexes, foreign keys, Pony's DDL)
- ``declared``: the declared options of entities and attributes, and entities declared again from them
- ``declared_values``: option and default values of a snapshot as JSON, and back (``declared``'s codec)

Written against Pony 0.7.20; ``docs/internals.md`` lists every private Pony name used here, and every
attribute ponykit sets on user classes and Pony objects. Nothing here patches a Pony class for the whole
process: provider methods are wrapped on one provider *instance*, converter lists are shadowed on one
provider *instance*, and write tracking is installed on the entity classes of one ``Database``.
"""

# ruff: noqa: F405 - the names of __all__ come from the star imports above it
from ._typing import *  # noqa: F403 - each module's __all__, listed again below
from .audit import *  # noqa: F403 - each module's __all__, listed again below
from .cascade import *  # noqa: F403 - each module's __all__, listed again below
from .connection import *  # noqa: F403 - each module's __all__, listed again below
from .database import *  # noqa: F403 - each module's __all__, listed again below
from .declared import *  # noqa: F403 - each module's __all__, listed again below
from .encoders import *  # noqa: F403 - each module's __all__, listed again below
from .entity_hooks import *  # noqa: F403 - each module's __all__, listed again below
from .explain import *  # noqa: F403 - each module's __all__, listed again below
from .links import *  # noqa: F403 - each module's __all__, listed again below
from .loading import *  # noqa: F403 - each module's __all__, listed again below
from .materialize import *  # noqa: F403 - each module's __all__, listed again below
from .metadata import *  # noqa: F403 - each module's __all__, listed again below
from .model import *  # noqa: F403 - each module's __all__, listed again below
from .offline import *  # noqa: F403 - each module's __all__, listed again below
from .outer_transaction import *  # noqa: F403 - each module's __all__, listed again below
from .pool import *  # noqa: F403 - each module's __all__, listed again below
from .predicates import *  # noqa: F403 - each module's __all__, listed again below
from .prepared import *  # noqa: F403 - each module's __all__, listed again below
from .queries import *  # noqa: F403 - each module's __all__, listed again below
from .references import *  # noqa: F403 - each module's __all__, listed again below
from .relations import *  # noqa: F403 - each module's __all__, listed again below
from .rls import *  # noqa: F403 - each module's __all__, listed again below
from .routing import *  # noqa: F403 - each module's __all__, listed again below
from .savepoints import *  # noqa: F403 - each module's __all__, listed again below
from .schema import *  # noqa: F403 - each module's __all__, listed again below
from .session import *  # noqa: F403 - each module's __all__, listed again below
from .sqlbuilder import *  # noqa: F403 - each module's __all__, listed again below
from .values import *  # noqa: F403 - each module's __all__, listed again below

__all__ = [  # noqa: RUF022 - grouped by module, sorted within each group
    # _typing: names for Pony objects (Pony ships no type information)
    "Attribute",
    "Entity",
    "SessionCache",
    # model: entity and attribute views (``EntityInfo``, ``AttrInfo``) and lookups on the mapping
    "AttrInfo",
    "EntityInfo",
    "LinkTable",
    "RelationKind",
    "attr_autostrip",
    "attr_column",
    "attr_expectation",
    "attr_info",
    "attr_infos",
    "attr_is_lazy",
    "attr_is_sensitive",
    "attr_label",
    "attr_names_without_columns",
    "attr_type",
    "attribute_converter",
    "attribute_entity",
    "attribute_option",
    "collection_attr_info",
    "collection_attr_names",
    "column_converters",
    "column_sql_types",
    "database_of",
    "default_alias",
    "discriminator_value",
    "entities_of",
    "entity_attribute",
    "entity_attributes",
    "entity_base",
    "entity_info",
    "entity_lineage",
    "entity_pk_attributes",
    "find_attribute",
    "is_attribute",
    "is_entity_class",
    "is_entity_instance",
    "max_length",
    "object_primary_key",
    "pony_repr",
    "primary_key",
    "raw_pk_leaf_attributes",
    "raw_primary_key",
    "relation_kind",
    "root_entity",
    "root_entity_name",
    "table_key",
    # database: provider facts, dialect, provider wrapping, converter lists, type normalization
    "converter_base",
    "converter_class_for",
    "dialect",
    "dialect_converter_class",
    "has_subclasses",
    "install_converters",
    "is_bound",
    "is_mapped",
    "is_provider_method_wrapped",
    "look_in_current_schema",
    "mapping_signature",
    "max_params",
    "paramstyle",
    "positional_placeholder",
    "quote_name",
    "register_type_normalization",
    "server_identity",
    "server_version",
    "supports_insert_returning",
    "table_entities",
    "wrap_provider_method",
    # connection: statements on a session's connection, a connection lost in a transaction, side connections
    "LostConnection",
    "abandon_connection",
    "connection_target",
    "copy_in_session",
    "describe_database",
    "drop_connection",
    "execute_in_session",
    "in_self_reported_statement",
    "is_lost_connection",
    "open_side_connection",
    "raw_connection",
    "sqlite_filename",
    # sqlbuilder: Pony's SQL builder: SQL operations, lookups, index DDL, query-parameter converters
    "column_param_converters",
    "default_column_index",
    "index_create_command",
    "install_index_renderer",
    "install_sql_operation",
    "lookup_condition_parts",
    "make_pattern_lookup_operation",
    "pattern_bounds",
    "register_column_converter",
    "wrap_param_converters",
    # session: session cache, depth, outside_session, flush, write hooks, identity-map upkeep
    "LinkRecorder",
    "WriteRecorder",
    "bookkeeping_in_session",
    "cached_objects",
    "connect_session",
    "connected_caches",
    "flush_if_dirty",
    "flush_session",
    "forget_objects",
    "in_db_session",
    "is_partial_commit",
    "in_flush",
    "install_write_hooks",
    "is_alive",
    "is_in_transaction",
    "loaded_value_by_name",
    "on_bookkeeping",
    "outside_session",
    "query_results_clear",
    "refresh_objects",
    "release_idle_caches",
    "require_session_cache",
    "reset_reverse_of",
    "run_before_insert",
    "session_cache",
    "session_databases",
    "session_depth",
    "session_objects",
    "snapshot_may_predate",
    "track_collection_changes",
    "unflushed_entities",
    # savepoints: savepoint statements, and the session snapshot a rollback to a savepoint puts back
    "SessionSnapshot",
    "loaded_state",
    "restore_session",
    "savepoint_statement",
    "snapshot_session",
    # values: validate, encode and decode values as Pony does; value round-trip checks
    "DEFAULT",
    "builtin_decoder_name",
    "column_value",
    "column_value_check",
    "converter_without_option",
    "decimal_limits",
    "decimal_quantum",
    "decode_value",
    "encode_value",
    "input_errors",
    "untracked",
    "validate_attribute",
    # encoders: bulk value encoders, and the generated-source fragments that name Pony's private slots
    "BulkAttr",
    "bulk_attrs",
    "bulk_encoder_setup",
    "bulk_encoder_source",
    "bulk_value_encoder",
    "loaded_values",
    "mark_read",
    "output_values_source",
    "pk_is_plain",
    "read_bits",
    # references: to-one relation values in bulk writes, and what a reference check needs
    "DriverFailure",
    "Reference",
    "driver_error",
    "driver_failure",
    "reference_of",
    # materialize: the materializer: session objects from raw rows, generated once per row layout
    "materialize",
    # loading: rebuilding entities from cached rows, raw rows of a query, loaded values
    "collection_items",
    "entity_by_raw_pk",
    "entity_rows",
    "find_by_raw_pk",
    "is_deleted_or_new",
    "is_seed",
    "load_seeds",
    "loaded_value",
    "not_loaded",
    "query_entity_rows",
    "rebuild_entities",
    # cascade: Pony's delete rules (cascade, set NULL, refuse) read from the mapping
    "DeleteRule",
    "delete_rules",
    "link_tables_of",
    "loaded_target",
    # links: many-to-many link tables, and loaded collections after link rows were written
    "ManyToMany",
    "int_key_bounds",
    "loaded_collections",
    "many_to_many",
    "object_keys",
    "update_loaded_links",
    # relations: prefetch loaders: relations and lazy columns loaded in batches
    "load_by_pk",
    "load_lazy",
    "load_many_to_many",
    "load_one_to_many",
    # prepared: prepared page queries: built by Pony once per shape, rebound per call
    "Prepared",
    "join_syntax",
    "preparable",
    "prepare",
    "query_arguments",
    "run_prepared",
    # queries: query shape, order, SQL and fetch; raw filters; N+1 culprit; stable query keys
    "QuerySQL",
    "count_capped",
    "desc_of",
    "discriminator_filter",
    "entity_query_sql",
    "fetch",
    "fetch_entities",
    "filter_raw",
    "implicit_distinct",
    "is_query",
    "lost_distinct",
    "n_plus_one_culprit",
    "order_in_select",
    "order_item",
    "per_database_cache",
    "query_alias",
    "query_cache_sizes",
    "query_database",
    "query_entity",
    "query_key",
    "query_order",
    "query_parts",
    "query_shape",
    "query_source",
    "query_sql",
    "raw_sql_condition",
    "run_query_uncached",
    "sql_alias",
    # outer_transaction: one shared connection in an outer transaction per test (ponykit.testing)
    "OuterPool",
    "TestConnection",
    "install_outer_pool",
    "open_connection",
    "table_names",
    "truncate_tables",
    # pool: the provider's connection pool: make and reset connections as it does, put another in place
    "PoolWrapper",
    "close_connection",
    "connection_factory",
    "install_pool",
    "is_in_memory_sqlite",
    "native_pool",
    "ping_connection",
    "pony_pool",
    "provider_pool",
    "reset_function",
    "run_on_connect",
    # explain: the session's connection for EXPLAIN, the mapping read backwards (tables -> attributes)
    "TableInfo",
    "session_connection",
    "table_infos",
    # metadata: the limits of an attribute's values, an entity's unique keys (test factories, strategies)
    "ValueLimits",
    "unique_keys",
    "value_limits",
    # entity_hooks: save hooks on one entity class (the entity mixins)
    "SaveHook",
    "add_save_hook",
    "is_modified",
    "object_status",
    "stored_value",
    # predicates: Pony predicates (obj, principal) as one-argument filter text for Query.filter
    "Combined",
    "Predicate",
    "PredicateError",
    "combine",
    "filter_text",
    "predicate_of",
    "select_text",
    # rls: row-level security settings on a session's transaction (PostgreSQL), tables and columns for DDL
    "applied_settings",
    "apply_settings",
    "attr_columns",
    "entity_table",
    "force_transaction",
    "is_ddl_session",
    "remember_settings",
    "session_in_transaction",
    "settings_prefix",
    # routing: which server a session's connection comes from: the read intent, replica routing hooks
    "MoveToPrimary",
    "OnWrite",
    "ReadIntent",
    "chain_provider_method",
    "describe_flush",
    "end_read_transaction",
    "is_moved_to_primary",
    "pending_flush",
    "pop_read_intent",
    "push_read_intent",
    "read_intent",
    "refuse_write",
    "reset_read_intent",
    "routes_reads",
    "set_read_intent",
    "set_router",
    "write_starting",
    # audit: an object's stored and current column values, raw column decoding (the audit trail)
    "audited_attributes",
    "column_decoder",
    "current_values",
    "stored_values",
    # offline: mapping without a server, or bound to a borrowed connection (migrations)
    "DIALECTS",
    "bind_to_connection",
    "map_offline",
    "offline_bind",
    # schema: a mapped Database's physical schema
    "PhysicalColumn",
    "PhysicalForeignKey",
    "PhysicalIndex",
    "PhysicalSchema",
    "PhysicalTable",
    "physical_schema",
    # declared: the declared options of entities and attributes, and entities declared again from them
    "BUILTIN_TYPES",
    "Unrestorable",
    "attr_spec",
    "declare_attr",
    "declare_entities",
    "entity_specs",
    "import_qualname",
    "mapping_columns",
    "mapping_discriminator",
    "mapping_link",
    "mapping_table",
    "spec_value",
    "value_of_spec",
]

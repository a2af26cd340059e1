"""Encrypted attribute types: ``EncryptedStr``, ``EncryptedBytes``, ``EncryptedJson``.

Values are encrypted with AES-256-GCM under the primary key of the Database's key ring (``attach(db,
keys=KeyRing(...))``), with a fresh random nonce per value, into the versioned envelope described in
``ponykit.security.envelope``. The associated data binds each ciphertext to ``<root entity>.<attribute>``.

``searchable=True`` adds a keyed blind index (HMAC-SHA256) to the stored text, so ``Entity.get(attr=v)``
and :func:`match` in generator queries find rows by equality, under every key of the ring (lookups keep
working during key rotation), through an index on the envelope header that ponykit creates with the table
(``_encrypted_lookup``). What it leaks: which rows of that attribute hold equal values.

The types are not ``str``/``bytes`` subclasses: on a Database that is not attached, Pony refuses to map
them (TypeError, no converter); attached without keys, ponykit refuses with ConfigurationError. Plaintext
is never stored, bound as a query parameter, logged, or shown in an error message.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from .. import _pony
from .._kit import Kit, get_kit
from ..errors import (
    ConfigurationError,
    DecryptionError,
    FieldError,
    UnsupportedComparison,
    ValidationError,
    ValueTypeError,
)
from ..security.envelope import NO_MATCH_PATTERN, VERSION, EnvelopeCodec, EnvelopeError
from ..security.keys import KeyRing
from ._bridge import reorder_converters
from ._encrypted_lookup import (
    LOOKUP_PREFIX_CHARS,
    _lookup_shape,
    _render_index,
    lookup_index_ddl,
    lookup_patterns_for,
    match,
)
from ._encrypted_values import (
    EncryptedBytes,
    EncryptedJson,
    EncryptedStr,
    EncryptedType,
    JsonRefused,
)

__all__ = [
    "EncryptedBytes",
    "EncryptedConverter",
    "EncryptedJson",
    "EncryptedStr",
    "EncryptedStrConverter",
    "EncryptedType",
    "JsonRefused",
    "lookup_index_ddl",
    "lookup_patterns_for",
    "match",
]

LOOKUP_OPERATION = "PONYKIT_ENCRYPTED_EQ"


# ---------------------------------------------------------------------------------------------------------
# The converter


_ConverterBase: Any = _pony.converter_base()


class _Declared(NamedTuple):
    """The facts of an encrypted attribute's declaration that :meth:`EncryptedConverter.init` checks."""

    entity: Any
    name: str
    args: tuple[Any, ...]
    unique: bool
    pk: bool
    py_check: Any
    index: Any


def _declared(attr: Any) -> _Declared:
    info = _pony.attr_info(attr)  # init() runs mid-mapping: this view is not cached (see _pony.model)
    return _Declared(info.entity, info.name, info.args, info.unique, info.pk, info.py_check, info.index)


class EncryptedConverter(_ConverterBase):  # type: ignore[misc]
    """Pony converter of encrypted attributes: envelope text in a TEXT column.

    One class for every attached Database: ``init()`` finds the attribute's :class:`~ponykit.kit.Kit`,
    whose ``keys`` is read on every value (the ring may be replaced). ``val2dbval``/``dbval2val`` call
    :class:`EnvelopeCodec`'s ``seal``/``open`` once per value.
    """

    EQ = LOOKUP_OPERATION
    # Any, not Kit: Kit.keys is KeyRing | None, and init() refuses a Kit without a key ring, so the
    # per-value paths pass kit.keys to the codec without checking it again.
    kit: Any
    ponykit_type: EncryptedType
    context: bytes
    codec: EnvelopeCodec
    text: bool
    searchable: bool
    label: str
    attr_name: str
    max_len: int | None
    column_type: str
    lookup_ring: tuple[Any, tuple[str, ...]] = (object(), ())  # (KeyRing, its key ids): lookup_pattern

    def __new__(cls, provider: Any, py_type: Any, attr: Any = None) -> EncryptedConverter:
        # EncryptedStr itself (not a subclass, which may encode otherwise) gets the str-only methods.
        if cls is EncryptedConverter and py_type is EncryptedStr:
            cls = EncryptedStrConverter
        return super().__new__(cls)  # type: ignore[no-any-return]

    def __init__(self, provider: Any, py_type: Any, attr: Any = None) -> None:
        if attr is None:
            raise UnsupportedComparison(
                f"{py_type.__name__} values cannot be query parameters: the column holds ciphertext. "
                "Use Entity.get(attr=value) or pk.types.match(Entity.attr, value) on a searchable "
                "attribute"
            )
        self.ponykit_type = py_type()
        _ConverterBase.__init__(self, provider, py_type, attr)

    def init(self, kwargs: dict[str, Any]) -> None:
        """Check the declaration (Pony calls this while mapping) and set up the attribute's codec."""
        info = _declared(self.attr)
        self.label = _pony.attr_label(self.attr)
        self.attr_name = info.name
        self.kit = get_kit(_pony.database_of(info.entity))
        searchable = kwargs.pop("searchable", False)
        if not isinstance(searchable, bool):
            raise ConfigurationError(f"attribute {self.label}: searchable must be True or False")
        self.max_len = self._max_len(info.args, kwargs.pop("max_len", None))
        self._check_declaration(info, searchable)
        self.searchable = searchable
        self.context = f"{_pony.root_entity_name(info.entity)}.{info.name}".encode()
        self.codec = EnvelopeCodec(self.context, searchable=searchable)
        self.text = type(self.ponykit_type) is EncryptedStr
        self.column_type = "LONGTEXT" if _pony.dialect(self.kit.db) == "mysql" else "TEXT"

    def _check_declaration(self, info: _Declared, searchable: bool) -> None:
        if not isinstance(self.kit.keys, KeyRing):
            raise ConfigurationError(
                f"attribute {self.label} is {self.py_type.__name__}, but {self.kit.db!r} was attached "
                "without keys: call ponykit.attach(db, keys=ponykit.security.KeyRing.from_env("
                "'PONYKIT_KEYS')) before db.generate_mapping()"
            )
        if info.unique or info.pk:
            raise ConfigurationError(
                f"attribute {self.label}: an encrypted attribute cannot be a primary key or unique "
                "(each value gets a fresh nonce, so the database cannot compare them); use "
                "searchable=True and Entity.get() to look values up"
            )
        if info.py_check is not None:
            raise ConfigurationError(
                f"attribute {self.label}: py_check is not supported on encrypted attributes (Pony puts "
                "the rejected value in its error message); validate before assigning"
            )
        if searchable:
            # The lookup index (see _render_index) is created with the table unless index=False.
            _pony.default_column_index(self.attr)
        elif info.index:
            raise ConfigurationError(
                f"attribute {self.label}: index= needs searchable=True (without a blind index every "
                "value is unique ciphertext, so an index cannot serve lookups)"
            )

    def _max_len(self, args: tuple[Any, ...], option: Any) -> int | None:
        if len(args) > 1 or (args and option is not None):
            raise ConfigurationError(
                f"attribute {self.label}: give the maximum length once, as Required(EncryptedStr, 200) "
                "or max_len=200"
            )
        limit = args[0] if args else option
        if limit is None:
            return None
        if type(self.ponykit_type) is not EncryptedStr:
            raise ConfigurationError(
                f"attribute {self.label}: a maximum length applies to EncryptedStr only, "
                f"not {self.py_type.__name__}"
            )
        if type(limit) is not int or limit < 1:
            raise ConfigurationError(
                f"attribute {self.label}: the maximum length must be a positive int, "
                f"got {type(limit).__name__}"
            )
        return limit

    def too_long(self, val: str) -> ValidationError:
        """The error for a plaintext over ``max_len`` (its length and content are not shown)."""
        message = (
            f"expected at most {self.max_len} characters, got a longer value (not shown: the "
            "attribute is encrypted)"
        )
        errors = [FieldError(self.attr_name, message)]
        return ValidationError(f"attribute {self.label}: {message}", errors)

    def validate(self, val: Any, obj: Any = None) -> Any:
        """The value to store, checked by the type (errors name the attribute, never the value)."""
        if val.__class__ is str and self.text:  # the common case, without a call
            if self.max_len is not None and len(val) > self.max_len:
                raise self.too_long(val)
            return val
        try:
            val = self.ponykit_type.validate(val)
        except JsonRefused as exc:
            raise ValidationError(
                f"attribute {self.label}: {exc}", [FieldError(self.attr_name, str(exc))]
            ) from None
        except (TypeError, ValueError) as exc:
            kind = ValueTypeError if isinstance(exc, TypeError) else ValidationError
            raise kind(f"attribute {self.label}: {exc}") from None
        # Outside the try: too_long's ValidationError already names the attribute (not wrapped twice).
        if self.max_len is not None and len(val) > self.max_len:
            raise self.too_long(val)
        return val

    def val2dbval(self, val: Any, obj: Any = None) -> Any:
        """The envelope text of a value (every write; EncryptedStrConverter does str without a call)."""
        if val is None:  # an Optional attribute set back to None: NULL
            return None
        return self.codec.seal(self.kit.keys, self.ponykit_type.encode(val))

    def dbval2val(self, dbval: Any, obj: Any = None) -> Any:
        """The value of stored envelope text (hot path: every load); DecryptionError if it does not open."""
        if dbval is None:
            return None
        try:
            data = self.codec.open(self.kit.keys, dbval)
        except EnvelopeError as exc:
            raise self.decryption_error(str(exc), obj) from None
        return self.ponykit_type.decode(data)

    def decryption_error(self, reason: str, obj: Any = None, pk: Any = None) -> DecryptionError:
        """The error for a value of this attribute that does not decrypt (no data in the message)."""
        if pk is None:
            pk = _pony.object_primary_key(obj)
        return DecryptionError(f"cannot decrypt {self.label} of the row with primary key {pk!r}: {reason}")

    def open(self, stored: Any, obj: Any = None, pk: Any = None) -> bytes:
        """Decrypt one stored value; DecryptionError names the entity, attribute and primary key."""
        try:
            return self.codec.open(self.kit.keys, stored)
        except EnvelopeError as exc:
            raise self.decryption_error(str(exc), obj, pk) from None

    def reencrypt(self, stored: str, pk: Any = None) -> str:
        """The stored value re-encrypted under the primary key (with a fresh blind index)."""
        return self.codec.seal(self.kit.keys, self.open(stored, pk=pk))

    def py2sql(self, val: Any) -> Any:
        """Envelope text only: a plaintext here would mean comparing it with ciphertext."""
        if val.__class__ is str and val.startswith(_ENVELOPE_PREFIX):
            return val
        raise UnsupportedComparison(
            f"attribute {self.label}: refusing to bind a plaintext value for an encrypted column"
        )

    def sql2py(self, val: Any) -> Any:
        """The stored text as str (some drivers return bytes)."""
        if val.__class__ is str:
            return val
        if isinstance(val, (bytes, bytearray)):
            return bytes(val).decode("ascii")
        return val

    def dbvals_equal(self, x: Any, y: Any) -> bool:
        """Stored texts compare as text."""
        return bool(x == y)

    def sql_type(self) -> str:
        """TEXT (LONGTEXT on MySQL/MariaDB): envelopes outgrow a short column."""
        return self.column_type

    def ponykit_lookup_functions(self) -> list[Any]:
        """One ``value -> LIKE pattern`` function per key of the ring (searchable attributes only)."""
        if not self.searchable:
            raise UnsupportedComparison(
                f"attribute {self.label} is encrypted without searchable=True, so it cannot be looked "
                "up by value (each value has its own random nonce); declare it with searchable=True"
            )
        slots = len(self.kit.keys.key_ids)
        return [functools.partial(self.lookup_pattern, slot, slots) for slot in range(slots)]

    def lookup_pattern(self, slot: int, slots: int, value: Any) -> str:
        """The LIKE pattern of ``value``'s envelopes under the ``slot``-th key of the current ring.

        Pony caches the lookup SQL with one pattern per key the ring had then; a smaller ring fills
        the extra slots with a pattern that matches nothing, a larger one cannot be served.
        """
        keys = self.kit.keys
        ring = self.lookup_ring
        if ring[0] is not keys:  # KeyRing.key_ids builds a tuple: once per ring, not per lookup
            ring = self.lookup_ring = (keys, keys.key_ids)
        key_ids = ring[1]
        if len(key_ids) > slots:
            raise ConfigurationError(
                f"attribute {self.label}: the key ring grew after lookups were prepared; restart the "
                "process after changing keys"
            )
        if slot >= len(key_ids):
            return NO_MATCH_PATTERN
        return self.codec.lookup_pattern(keys, key_ids[slot], self.ponykit_type.encode(value))


class EncryptedStrConverter(EncryptedConverter):
    """:class:`EncryptedConverter` of ``EncryptedStr``: the per-value methods without the type's calls.

    ``EncryptedConverter(...)`` makes one of these for ``EncryptedStr`` itself (subclasses may encode
    otherwise). Written and loaded once per value; UTF-8 is all the type does, so it is done here inline.
    """

    def val2dbval(self, val: Any, obj: Any = None) -> Any:
        """The envelope text of a str (hot path: every write)."""
        if val is None:  # an Optional attribute set back to None: NULL
            return None
        return self.codec.seal(self.kit.keys, val.encode("utf-8", "surrogatepass"))

    def dbval2val(self, dbval: Any, obj: Any = None) -> Any:
        """The str of stored envelope text (hot path: every load); DecryptionError if it does not open."""
        if dbval is None:
            return None
        try:
            return self.codec.open(self.kit.keys, dbval).decode("utf-8", "surrogatepass")
        except EnvelopeError as exc:
            raise self.decryption_error(str(exc), obj) from None


_ENVELOPE_PREFIX = VERSION + ":"


def _forbidden(_converter: Any) -> BaseException:
    return UnsupportedComparison("encrypted attributes can only be compared with a value")


def install_encrypted(kit: Kit) -> None:
    """Install the encrypted types' converter, lookup operation and index renderer on ``kit.db``."""
    operation = _pony.make_pattern_lookup_operation(_forbidden, _lookup_shape(kit.db), LOOKUP_PREFIX_CHARS)
    _pony.install_sql_operation(kit.db, LOOKUP_OPERATION, operation)
    _pony.install_index_renderer(kit.db, _render_index(kit.db))
    kit.register_converter(EncryptedType, EncryptedConverter)
    reorder_converters(kit)

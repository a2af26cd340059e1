"""Built-in value types: any ``enum.Enum`` subclass, timezone-aware datetimes, ``ipaddress`` values.

* **Enum**: ``Required(Plan)`` for any Enum whose values are all ``str`` or all ``int``; stored by value in
  the dialect's VARCHAR/TEXT or INTEGER column, read back as members. Equality and ``in`` work in
  generator queries. A str/int-mixin Enum (``class Color(str, Enum)``, ``IntEnum``), which plain Pony
  already maps as str/int, keeps Pony's mapping unless the attribute says ``as_enum=True``.
* **AwareDatetime**: ``Required(AwareDatetime)`` holds timezone-aware ``datetime`` values, stored as UTC
  in the dialect's DATETIME/TIMESTAMP column and returned aware (UTC). Naive input is rejected.
* **ipaddress**: ``Required(IPv4Address)`` / ``IPv6Address`` / ``IPv4Network`` / ``IPv6Network``, and
  ``IPAddress`` / ``IPNetwork`` for either version; stored as text.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
from typing import Any, ClassVar

from pony.orm import Database

from .. import _pony
from .._kit import Kit
from ..errors import ConfigurationError, DataError, OptionError, ValidationError, ValueTypeError
from ..security.sensitive import is_sensitive
from ._bridge import enable_query_params, param_encoders_of, reorder_converters
from .base import AttributeType

_UTC = _dt.timezone.utc

__all__ = [
    "AwareDatetime",
    "EnumType",
    "IPAddress",
    "IPNetwork",
]


# ---------------------------------------------------------------------------------------------------------
# Enum


def enum_storage(enum_cls: type[enum.Enum]) -> type:
    """``str`` or ``int``: how members of ``enum_cls`` are stored; TypeError for anything else."""
    values = [m.value for m in enum_cls]
    if values and all(isinstance(v, str) for v in values):
        return str
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return int
    raise OptionError(
        f"Enum {enum_cls.__name__} cannot be stored: ponykit stores enums by value, and the values must all "
        "be str or all be int"
    )


class EnumType(AttributeType):
    """Any ``enum.Enum`` subclass, stored by value. JSON form: the member's value."""

    queryable: ClassVar[bool] = True

    def __init__(self, enum_cls: type[enum.Enum], **options: Any) -> None:
        super().__init__(**options)
        self.enum_cls = enum_cls
        self.value_storage = enum_storage(enum_cls)

    def validate(self, value: Any) -> Any:
        """The member for ``value`` (a member, or a member's value); ValueError naming the valid values."""
        enum_cls = self.enum_cls
        if isinstance(value, enum_cls):
            return value
        if isinstance(value, enum.Enum):
            raise ValueTypeError(
                f"expected a {enum_cls.__name__} member, got {type(value).__name__}.{value.name}"
            )
        try:
            return enum_cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum_cls)
            raise ValidationError(
                f"{value!r} is not a valid {enum_cls.__name__} value; expected one of: {allowed}"
            ) from None

    def is_python_value(self, value: Any) -> bool:
        """True for members of this Enum."""
        return isinstance(value, self.enum_cls)

    def to_db(self, value: Any) -> Any:
        """The member's value."""
        return value.value

    def from_db(self, value: Any) -> Any:
        """The member with this value (ValueError for an unknown stored value)."""
        return self.validate(value)

    def to_json(self, value: Any) -> Any:
        """The member's value (a str/int-mixin Enum attribute mapped as plain Pony holds the value)."""
        return value.value if isinstance(value, enum.Enum) else value

    def from_json(self, data: Any) -> Any:
        """The member with this value."""
        return self.validate(data)

    def json_schema(self) -> dict[str, Any]:
        """``{"enum": [values...]}`` with the value type."""
        return {
            "type": "string" if self.value_storage is str else "integer",
            "enum": [m.value for m in self.enum_cls],
        }


def enum_codec(py_type: type) -> AttributeType | None:
    """The JSON codec of an ``enum.Enum`` subclass declared as an attribute type (``types`` lists it)."""
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        try:
            return EnumType(py_type)
        except TypeError:
            return None
    return None


AS_ENUM = "as_enum"


def is_mixin_enum(enum_cls: type) -> bool:
    """True for Enums that are also ``str`` or ``int`` (``class Color(str, Enum)``, ``IntEnum``, ``StrEnum``):
    plain Pony already maps those, as their str/int base type."""
    return issubclass(enum_cls, (str, int))


def members_wanted(enum_cls: type, attr: Any) -> bool:
    """Whether ``attr`` (declared with Enum ``enum_cls``) holds members (ponykit's mapping) or, for a
    str/int-mixin Enum without ``as_enum=True``, the plain values Pony gives (issue #12 item 6)."""
    option = _pony.attribute_option(attr, AS_ENUM)
    where = f"attribute {_pony.attr_label(attr)}"
    if option is not None and not isinstance(option, bool):
        raise ConfigurationError(f"{where}: as_enum must be True or False, got {type(option).__name__}")
    if not is_mixin_enum(enum_cls):
        if option is False:
            raise ConfigurationError(
                f"{where}: as_enum=False needs a str or int Enum (class {enum_cls.__name__}(str, Enum)); "
                f"plain Pony cannot store {enum_cls.__name__} values, so they are always stored as members"
            )
        return True
    if option is False:
        raise ConfigurationError(
            f"{where}: as_enum=False is the default for str/int Enums; remove the option"
        )
    return option is True


_ConverterBase: Any = _pony.converter_base()


class EnumConverter(_ConverterBase):  # type: ignore[misc]
    """ponykit converter for Enum attributes: stored by value in the dialect's str or int column.

    The methods live here, once; :func:`make_enum_converter` makes the subclass Pony gets for one Database,
    which sets :attr:`db` and :attr:`encoders`. The Database cannot be found from the arguments instead:
    query-parameter converters are built with ``attr=None``.
    """

    db: ClassVar[Database]  # set on the per-Database subclass
    encoders: ClassVar[dict[type, Any]]  # the Database's query-parameter encoders (param_encoders_of)
    ponykit_type: EnumType
    inner: Any  # the dialect's str/int converter: sql type, checks, driver conversion

    def __new__(cls, provider: Any, py_type: Any, attr: Any = None) -> Any:
        if attr is not None and not members_wanted(py_type, attr):
            # A str/int-mixin Enum without as_enum=True: exactly the converter plain Pony builds.
            return _pony.dialect_converter_class(cls.db, py_type)(provider, py_type, attr)
        return _ConverterBase.__new__(cls)

    def __init__(self, provider: Any, py_type: Any, attr: Any = None) -> None:
        try:
            self.ponykit_type = EnumType(py_type)
        except TypeError as exc:
            where = f"attribute {_pony.attr_label(attr)}: " if attr is not None else ""
            raise OptionError(where + str(exc)) from None
        storage = self.ponykit_type.value_storage
        inner_cls = _pony.converter_class_for(self.db, storage)
        if attr is None:
            self.inner = inner_cls(provider, storage, attr)
        else:
            self.inner = _pony.converter_without_option(inner_cls, provider, storage, attr, AS_ENUM)
        _ConverterBase.__init__(self, provider, py_type, attr)
        if attr is not None:
            # Generator queries compare the column with members through the storage type.
            _pony.register_type_normalization(py_type, storage)
            self.encoders.setdefault(py_type, self.ponykit_type)
            enable_query_params(self.db, storage, self.encoders)

    def init(self, kwargs: dict[str, Any]) -> None:
        """Accept the declaration: the storage converter built in ``__init__`` has checked the options."""
        kwargs.clear()  # Pony refuses options left in kwargs, and the storage converter has taken them

    def validate(self, val: Any, obj: Any = None) -> Any:
        """The member for ``val`` (a member or its value); ValueTypeError/ValidationError otherwise."""
        try:
            member = self.ponykit_type.validate(val)
        except (TypeError, ValueError) as exc:
            kind = ValueTypeError if isinstance(exc, TypeError) else ValidationError
            raise kind(f"attribute {_pony.attr_label(self.attr)}: {self._invalid_detail(val, exc)}") from None
        self.inner.validate(member.value, None)  # max_len, min/max
        return member

    def _invalid_detail(self, val: Any, exc: Exception) -> str:
        """Why ``val`` was refused: the EnumType message, or, on a sensitive attribute, one without it."""
        if not is_sensitive(self.attr):
            return str(exc)
        # The message names the value's type and the members, not the value.
        enum_cls = self.ponykit_type.enum_cls
        members = ", ".join(repr(m.value) for m in enum_cls)
        return (
            f"a {type(val).__name__} that is not a {enum_cls.__name__} member (value hidden: the "
            f"attribute is sensitive); expected one of: {members}"
        )

    def val2dbval(self, val: Any, obj: Any = None) -> Any:
        """The member's value (what the column holds)."""
        return None if val is None else val.value  # None: an Optional attribute set back to None

    def dbval2val(self, dbval: Any, obj: Any = None) -> Any:
        """The member for a column value; DataError if the Enum has no such value."""
        if dbval is None:
            return None
        try:
            return self.ponykit_type.enum_cls(dbval)
        except ValueError:
            raise self._unknown_value(dbval, obj) from None

    def _unknown_value(self, dbval: Any, obj: Any) -> DataError:
        """The error for a row whose column holds a value that is no member of the Enum."""
        allowed = ", ".join(repr(m.value) for m in self.ponykit_type.enum_cls)
        kind = type(dbval).__name__
        held = (
            f"a {kind} (value hidden: the attribute is sensitive)"
            if is_sensitive(self.attr)
            else (f"{dbval!r} (a {kind})")
        )
        return DataError(
            f"attribute {_pony.attr_label(self.attr)} (primary key "
            f"{_pony.object_primary_key(obj)!r}): the database holds {held}, which is not a "
            f"{self.ponykit_type.enum_cls.__name__} value (expected one of: {allowed}); add the "
            "member to the Enum or fix the row"
        )

    def py2sql(self, val: Any) -> Any:
        """The driver value: a member's value (query parameters may be members), through the storage."""
        if isinstance(val, enum.Enum):
            val = val.value
        return self.inner.py2sql(val)

    def sql2py(self, val: Any) -> Any:
        """The storage converter's conversion of the driver's value."""
        return self.inner.sql2py(val)

    def sql_type(self) -> str:
        """The storage converter's column type (VARCHAR/TEXT or INTEGER for the dialect)."""
        return str(self.inner.sql_type())


def make_enum_converter(db: Database, encoders: dict[type, Any]) -> type:
    """The converter class of every Enum attribute on ``db`` (it wraps the dialect's str/int converter).

    A subclass of :class:`EnumConverter` per Database, as before the class moved to module level: it
    carries ``db`` and its query-parameter ``encoders``.
    """
    namespace = {"db": db, "encoders": encoders, "__doc__": EnumConverter.__doc__, "__module__": __name__}
    return type("EnumConverter", (EnumConverter,), namespace)


# ---------------------------------------------------------------------------------------------------------
# Timezone-aware datetime


class AwareDatetime(AttributeType):
    """Timezone-aware ``datetime`` values, stored as UTC and returned aware in UTC.

    Declare ``Required(pk.types.AwareDatetime)``. Naive datetimes are rejected (ValueError). In generator
    queries, an aware value compared directly with the attribute (``==``, ``<``, ``in``, ``between`` ...)
    is converted to UTC before binding; elsewhere in a query pass UTC values. Plain ``datetime``
    attributes are not affected: they keep Pony's behaviour.
    """

    python_type: ClassVar[type] = _dt.datetime
    storage: ClassVar[type] = _dt.datetime
    deterministic: ClassVar[bool] = True
    _last: tuple[Any, Any] = (None, None)  # (aware value, its stored form): see to_db

    def validate(self, value: Any) -> Any:
        """The value in UTC; rejects naive datetimes and other types."""
        if not isinstance(value, _dt.datetime):
            raise ValueTypeError(f"expected a timezone-aware datetime, got {type(value).__name__}")
        tzinfo = value.tzinfo
        if tzinfo is _UTC:
            return value  # already UTC: the common case (timestamps, values read back), no new object
        if tzinfo is None or value.utcoffset() is None:
            raise ValidationError(
                "got a naive datetime; give a timezone-aware one, e.g. datetime.now(timezone.utc) or "
                "value.replace(tzinfo=ZoneInfo('Europe/Paris'))"
            )
        return value.astimezone(_UTC)

    def is_python_value(self, value: Any) -> bool:
        """True for aware datetimes (the stored form is naive UTC)."""
        return isinstance(value, _dt.datetime) and value.tzinfo is not None

    def to_db(self, value: Any) -> Any:
        """Naive UTC."""
        # A bulk write of timestamps converts one instant thousands of times (and Pony's converter asks
        # twice per value): the last conversion is kept. One tuple, swapped whole: safe across threads.
        last = self._last
        if last[0] is value:
            return last[1]
        stored = (value if value.tzinfo is _UTC else value.astimezone(_UTC)).replace(tzinfo=None)
        self._last = (value, stored)
        return stored

    def from_db(self, value: Any) -> Any:
        """Aware UTC."""
        if value.tzinfo is not None:  # a driver that returns aware values
            return value.astimezone(_dt.timezone.utc)
        return value.replace(tzinfo=_dt.timezone.utc)

    def to_json(self, value: Any) -> Any:
        """ISO 8601 with offset."""
        return str(value.isoformat())

    def from_json(self, data: Any) -> Any:
        """Parse ISO 8601 (an offset is required)."""
        return self.validate(_dt.datetime.fromisoformat(data) if isinstance(data, str) else data)

    def json_schema(self) -> dict[str, Any]:
        """A date-time string."""
        return {"type": "string", "format": "date-time"}


# ---------------------------------------------------------------------------------------------------------
# ipaddress


class _IPType(AttributeType):
    storage: ClassVar[type] = str
    parse: ClassVar[Any] = None
    label: ClassVar[str] = ""

    def validate(self, value: Any) -> Any:
        """The ip value for an ip object or its text form."""
        if isinstance(value, self.python_type):
            return value
        if isinstance(value, str):
            try:
                return type(self).parse(value)
            except ValueError:
                raise ValidationError(f"{value!r} is not a valid {self.label}") from None
        raise ValueTypeError(f"expected {self.label} or its text form, got {type(value).__name__}")

    def to_db(self, value: Any) -> Any:
        """The compressed text form."""
        return str(value)

    def from_db(self, value: Any) -> Any:
        """Parse the text form."""
        return type(self).parse(value)

    def json_schema(self) -> dict[str, Any]:
        """A string."""
        return {"type": "string", "format": self.label.replace(" ", "-")}


def _ip_type(name: str, py: Any, parse: Any, label: str) -> type[_IPType]:
    return type(
        name,
        (_IPType,),
        {"python_type": py, "parse": staticmethod(parse), "label": label, "__doc__": f"{label} values."},
    )


IPv4AddressType = _ip_type("IPv4AddressType", ipaddress.IPv4Address, ipaddress.IPv4Address, "IPv4 address")
IPv6AddressType = _ip_type("IPv6AddressType", ipaddress.IPv6Address, ipaddress.IPv6Address, "IPv6 address")
IPv4NetworkType = _ip_type("IPv4NetworkType", ipaddress.IPv4Network, ipaddress.IPv4Network, "IPv4 network")
IPv6NetworkType = _ip_type("IPv6NetworkType", ipaddress.IPv6Network, ipaddress.IPv6Network, "IPv6 network")


class IPAddress(_IPType):
    """IPv4 or IPv6 addresses: declare ``Required(pk.types.IPAddress)``."""

    python_type: ClassVar[Any] = (ipaddress.IPv4Address, ipaddress.IPv6Address)
    parse: ClassVar[Any] = staticmethod(ipaddress.ip_address)
    label: ClassVar[str] = "IP address"


class IPNetwork(_IPType):
    """IPv4 or IPv6 networks: declare ``Required(pk.types.IPNetwork)``."""

    python_type: ClassVar[Any] = (ipaddress.IPv4Network, ipaddress.IPv6Network)
    parse: ClassVar[Any] = staticmethod(ipaddress.ip_network)
    label: ClassVar[str] = "IP network"


#: ponykit's own registered types, in registration order: ``ponykit.types`` registers them once.
BUILTIN_TYPES: tuple[tuple[type, type[AttributeType]], ...] = (
    (ipaddress.IPv4Address, IPv4AddressType),
    (ipaddress.IPv6Address, IPv6AddressType),
    (ipaddress.IPv4Network, IPv4NetworkType),
    (ipaddress.IPv6Network, IPv6NetworkType),
    (IPAddress, IPAddress),
    (IPNetwork, IPNetwork),
    (AwareDatetime, AwareDatetime),
)


def install_enum(kit: Kit) -> None:
    """Install the converter of every ``enum.Enum`` subclass on ``kit.db`` (idempotent)."""
    kit.register_converter(enum.Enum, make_enum_converter(kit.db, param_encoders_of(kit)))
    reorder_converters(kit)

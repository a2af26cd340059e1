"""ponykit.testing.AttributeTypeContract run against ponykit's own types on every backend: an Enum,
AwareDatetime and the ip address and network types."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from pony.orm import Database

import ponykit as pk
from ponykit.testing import AttributeTypeContract


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


class OnEveryBackend(AttributeTypeContract):
    """The contract on SQLite, PostgreSQL and MariaDB (the suite's make_db), not only in-memory SQLite."""

    @pytest.fixture
    def contract_database(self, make_db: Callable[[], Database]) -> Database:
        return make_db()


class TestEnumByValue(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return Plan

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return list(Plan)

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return ["gold", Level.LOW, object()]


class TestIntEnum(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return Level

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return list(Level)

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return [3, Plan.PRO]


class TestAwareDatetime(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return pk.types.AwareDatetime

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        paris = dt.timezone(dt.timedelta(hours=2))
        # Whole seconds: Pony maps a datetime without precision= to a MySQL DATETIME of whole seconds.
        return [
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
            dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=paris),
            dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        ]

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return [dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05+00:00", object()]


class TestIPv4Address(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return ipaddress.IPv4Address

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return [ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("192.168.1.254")]

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return ["10.0.0.300", ipaddress.IPv6Address("::1"), 42]


class TestIPAddress(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return pk.types.IPAddress

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return [ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv6Address("2001:db8::1")]

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return ["not an address", 42]


class TestIPNetwork(OnEveryBackend):
    @pytest.fixture
    def attribute_type(self) -> Any:
        return pk.types.IPNetwork

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return [ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv6Network("2001:db8::/32")]

    @pytest.fixture
    def invalid_values(self) -> list[Any]:
        return ["10.0.0.1/8", ipaddress.IPv4Address("10.0.0.1")]


class TestDefaultDatabase(AttributeTypeContract):
    """With no contract_database override the contract runs on its own in-memory SQLite Database."""

    @pytest.fixture
    def attribute_type(self) -> Any:
        return Plan

    @pytest.fixture
    def sample_values(self) -> list[Any]:
        return [Plan.FREE, Plan.PRO]

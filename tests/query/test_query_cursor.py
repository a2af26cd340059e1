"""The cursor codec on its own: HMAC and base64 against the standard library, round trips, spellings."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponykit.errors import ConfigurationError, InvalidCursor
from ponykit.query._plain import to_plain
from ponykit.query.cursor import VERSION, Signer, bind_arguments, decode_cursor, encode_cursor, fingerprint

KEY = os.urandom(32)
BOUND = fingerprint("Item", "SELECT ...", "Item.rank:a,Item.id:a")

sort_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=40),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.uuids(),
)


def _stdlib_cursor(values: list[Any], key: bytes, bound_to: bytes) -> str:
    """A cursor made with base64 and hmac as the first version of the codec made them."""
    head = bytes([VERSION]) + orjson.dumps([to_plain(v) for v in values])
    tag = hmac.new(key, bound_to + head, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(head + tag).rstrip(b"=").decode("ascii")


@given(key=st.binary(max_size=200), data=st.binary(max_size=300))
def test_signer_tag_is_hmac_sha256(key: bytes, data: bytes) -> None:
    """Keys shorter than, equal to and longer than SHA-256's 64-byte block, and any message."""
    assert Signer(key).tag(data) == hmac.digest(key, data, "sha256")


@given(values=st.lists(sort_values, min_size=1, max_size=4))
def test_cursors_are_what_the_standard_library_makes(values: list[Any]) -> None:
    """Same bytes as base64 + hmac give, so cursors issued before this codec was optimized stay valid."""
    expected = _stdlib_cursor(values, KEY, BOUND)
    assert encode_cursor(values, Signer(KEY), BOUND) == expected
    assert encode_cursor(values, KEY, BOUND) == expected
    assert decode_cursor(expected, Signer(KEY), BOUND, len(values)) == values


@given(values=st.lists(sort_values, min_size=1, max_size=4))
def test_round_trip_keeps_types(values: list[Any]) -> None:
    decoded = decode_cursor(encode_cursor(values, Signer(KEY), BOUND), KEY, BOUND, len(values))
    assert decoded == values
    assert [type(v) for v in decoded] == [type(v) for v in values]


def test_special_floats_round_trip() -> None:
    values = [float("inf"), float("-inf"), -0.0]
    decoded = decode_cursor(encode_cursor(values, KEY, BOUND), KEY, BOUND, 3)
    assert decoded == values and str(decoded[2]) == "-0.0"
    (nan,) = decode_cursor(encode_cursor([float("nan")], KEY, BOUND), KEY, BOUND, 1)
    assert nan != nan


def _respellings(cursor: str) -> list[str]:
    """Other spellings of the same bytes (or of bytes a lenient decoder would read), none canonical."""
    last = cursor[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare_bits = {2: 0b1111, 3: 0b11}.get(len(cursor) % 4, 0)
    spare = [
        cursor[:-1] + alphabet[alphabet.index(last) | bit]
        for bit in (1, 2, 4, 8)
        if bit & spare_bits and not alphabet.index(last) & bit
    ]
    standard = cursor.replace("-", "+").replace("_", "/")
    return [
        *spare,
        *([standard] if standard != cursor else []),
        cursor + "=" * (-len(cursor) % 4 or 4),
        cursor[:5] + "\n" + cursor[5:],
        cursor[:5] + " " + cursor[5:],
        cursor[:5] + "*" + cursor[5:],
        cursor[:5] + "é" + cursor[5:],
    ]


@pytest.mark.parametrize("values", [[1, 2], [None, 7], ["ab", 3], [Decimal("1.5"), uuid.uuid4()]])
def test_only_the_canonical_spelling_is_accepted(values: list[Any]) -> None:
    cursor = encode_cursor(values, KEY, BOUND)
    assert decode_cursor(cursor, KEY, BOUND, len(values)) == values
    for other in _respellings(cursor):
        with pytest.raises(InvalidCursor):
            decode_cursor(other, KEY, BOUND, len(values))


def test_spare_bits_are_checked_whatever_the_length() -> None:
    """Payloads of every length modulo 3 end in each of the three base64 tail shapes."""
    tails = set()
    for n in range(3):
        values = ["x" * n, 1]
        cursor = encode_cursor(values, KEY, BOUND)
        tails.add(len(cursor) % 4)
        for other in _respellings(cursor):
            with pytest.raises(InvalidCursor):
                decode_cursor(other, KEY, BOUND, 2)
    assert tails == {0, 2, 3}


@pytest.mark.parametrize(
    "bad",
    [None, b"AQ", 17, "", "A", "AQ", "A" * 8193, "\x00" * 60, "é" * 60],
    ids=["none", "bytes", "int", "empty", "one-char", "too-short", "too-long", "nul", "non-ascii"],
)
def test_garbage_is_invalid(bad: Any) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(bad, KEY, BOUND, 2)


def test_wrong_width_version_key_or_binding_is_invalid() -> None:
    cursor = encode_cursor([1, 2], KEY, BOUND)
    for call in (
        lambda: decode_cursor(cursor, KEY, BOUND, 3),
        lambda: decode_cursor(cursor, os.urandom(32), BOUND, 2),
        lambda: decode_cursor(cursor, KEY, fingerprint("Item", "SELECT ...", "Item.rank:d,Item.id:a"), 2),
    ):
        with pytest.raises(InvalidCursor):
            call()
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[0] = VERSION + 1
    tag = hmac.digest(KEY, BOUND + bytes(raw[:-32]), "sha256")
    other_version = base64.urlsafe_b64encode(bytes(raw[:-32]) + tag).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        decode_cursor(other_version, KEY, BOUND, 2)


def test_signed_payload_that_is_not_a_list_is_invalid() -> None:
    """A correctly signed payload of the wrong shape (only a key holder could make one) is refused too."""
    for payload in (b'{"a": 1}', b"12", b'[{"~zz": 1}, 2]', b"[1, 2"):
        head = bytes([VERSION]) + payload
        cursor = base64.urlsafe_b64encode(head + hmac.digest(KEY, BOUND + head, "sha256"))
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor.rstrip(b"=").decode(), KEY, BOUND, 2)


def test_datetime_values_keep_their_timezone() -> None:
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    (got,) = decode_cursor(encode_cursor([aware], KEY, BOUND), KEY, BOUND, 1)
    assert got == aware and got.utcoffset() == aware.utcoffset()


def test_any_key_of_several_verifies() -> None:
    """decode_cursor accepts a cursor signed with any of the keys given (a ring during rotation), in any
    position, and refuses it when none of them signed it."""
    old, new, other = os.urandom(32), os.urandom(32), os.urandom(32)
    cursor = encode_cursor([1, "a"], Signer(old), BOUND)
    for keys in ([Signer(new), Signer(old)], [old], (Signer(old), new), [new, other, Signer(old)]):
        assert decode_cursor(cursor, keys, BOUND, 2) == [1, "a"]
    for keys in ([Signer(new)], [new, other], []):
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor, keys, BOUND, 2)


@given(arguments=st.lists(sort_values, max_size=4), other=st.lists(sort_values, max_size=4))
def test_bind_arguments_is_stable_and_separates_values(arguments: list[Any], other: list[Any]) -> None:
    """The narrowed fingerprint depends on the argument values only (same values: same digest; no
    arguments: the fingerprint itself) and differs for other values."""
    bound = bind_arguments(BOUND, arguments)
    assert bound == bind_arguments(BOUND, list(arguments))
    assert (bound == BOUND) == (not arguments)
    if [to_plain(v) for v in other] != [to_plain(v) for v in arguments]:
        assert bind_arguments(BOUND, other) != bound
    assert bind_arguments(fingerprint("Other"), arguments) != bound or not arguments


def test_bind_arguments_refuses_values_known_only_by_address() -> None:
    """A parameter whose only text is its address cannot be bound stably: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="bind_parameters=False"):
        bind_arguments(BOUND, [object()])

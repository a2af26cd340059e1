"""Read-your-writes pins and their tokens: scopes shared across threads and tasks, tamper-safe tokens.

Pure Python (no database): the pins a commit records are tested against a real replica in
test_replicas.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ponykit.binding import current_pin, use_pin
from ponykit.binding._pins import format_lsn, parse_lsn, pin_for, record_pin, token_pins

KEY = "0123456789ab"
OTHER = "ba9876543210"
lsns = st.integers(min_value=0, max_value=2**64 - 1)


@given(lsns)
def test_lsn_text_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_lsn_order_is_wal_order() -> None:
    assert parse_lsn("0/FFFFFFFF") < parse_lsn("1/0") < parse_lsn("1/10") < parse_lsn("A/0")
    with pytest.raises(ValueError, match="WAL position"):
        parse_lsn("12345")


def test_no_pin_outside_a_scope() -> None:
    def fresh() -> None:
        assert current_pin() is None
        assert pin_for(KEY) is None

    contextvars.Context().run(fresh)


def test_scope_keeps_the_highest_position_per_primary() -> None:
    with use_pin() as scope:
        record_pin(KEY, 100)
        record_pin(KEY, 50)  # an older commit (another thread) never moves the pin back
        record_pin(OTHER, 7)
        assert scope.pins == {KEY: 100, OTHER: 7}
        token = current_pin()
    assert token is not None
    assert token_pins(token) == {KEY: 100, OTHER: 7}
    with use_pin(token):
        assert pin_for(KEY) == 100
    assert "0123456789ab" not in repr(scope)  # a repr names no primary


@given(st.dictionaries(st.from_regex(r"[0-9a-f]{12}", fullmatch=True), lsns, min_size=1, max_size=5))
def test_tokens_round_trip_signed_and_plain(pins: dict[str, int]) -> None:
    with use_pin():
        for key, lsn in pins.items():
            record_pin(key, lsn)
        plain, signed = current_pin(), current_pin(secret="s3cret")
    assert token_pins(plain) == pins
    assert token_pins(signed, secret="s3cret") == pins
    assert token_pins(signed, secret="other") is None
    assert token_pins(plain, secret="s3cret") is None  # a secret requires a signature


@given(st.data())
def test_any_change_to_a_signed_token_is_rejected(data: st.DataObject) -> None:
    with use_pin():
        record_pin(KEY, data.draw(lsns))
        token = current_pin(secret=b"k")
    assert token is not None
    i = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[i]))
    tampered = token[:i] + replacement + token[i + 1 :]
    assert token_pins(tampered, secret=b"k") is None


@given(st.text(max_size=300))
@example("pk1.")
@example("pk1.e30")  # {}
@example("pk1.eyJ4IjoxfQ")  # {"x": 1}
@example("pk1." + "A" * 3000)
def test_any_text_is_a_valid_token_or_ignored(text: str) -> None:
    pins = token_pins(text)  # never raises
    assert pins is None or all(isinstance(v, int) for v in pins.values())
    with use_pin(text):  # ignored with a warning, never an error
        pass


def test_bad_token_is_logged_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    with use_pin("pk1.secret-looking-garbage"):
        assert current_pin() is None
    assert "ignored a read-your-writes pin token" in caplog.text
    assert "secret-looking-garbage" not in caplog.text


def test_scope_is_shared_with_threads_started_in_its_context() -> None:
    with use_pin():
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(record_pin, KEY, 42))
        worker.start()
        worker.join()
        assert pin_for(KEY) == 42  # the box is shared, not copied
    assert pin_for(KEY) is None


def test_scope_is_shared_with_asyncio_tasks() -> None:
    async def write(lsn: int) -> None:
        await asyncio.sleep(0)
        record_pin(KEY, lsn)

    async def request() -> int | None:
        with use_pin():
            await asyncio.gather(asyncio.create_task(write(5)), asyncio.create_task(write(9)))
            return pin_for(KEY)

    assert asyncio.run(request()) == 9


def test_nested_scopes_are_separate_and_restored() -> None:
    with use_pin():
        record_pin(KEY, 1)
        with use_pin():
            assert pin_for(KEY) is None
            record_pin(KEY, 2)
        assert pin_for(KEY) == 1

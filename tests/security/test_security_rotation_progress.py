"""rotate_keys speaks the batch operations' vocabulary: progress(done, total), batch_size defaulting to
bulk's, the same error shape for a bad batch_size; a one-argument callback still works, deprecated."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
from pony.orm import Database
from test_security_rotation import K1, K2, fill, make_schema, under

import ponykit as pk
from ponykit.errors import ConfigurationError
from ponykit.security import KeyRing, RotationProgress, rotate_keys, rotation

ROWS = 120
K3 = KeyRing.generate_key()
K4 = KeyRing.generate_key()


def _rotating(db: Database) -> Any:
    person, kit = make_schema(db)
    fill(db, person, ROWS)
    kit.keys = KeyRing({"k2": K2, "k1": K1})
    return person


def test_progress_takes_done_and_total(db: Database) -> None:
    """progress(done, total) after each committed batch, as bulk_* call it; no warning."""
    person = _rotating(db)
    seen: list[tuple[int, int | None]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = rotate_keys(person, batch_size=50, progress=lambda done, total: seen.append((done, total)))
    assert done == 2 * ROWS
    assert seen == [(50, 240), (100, 240), (120, 240), (170, 240), (220, 240), (240, 240)]
    assert under(db, "k2") == ROWS


@pytest.mark.backends("sqlite")
def test_callbacks_of_two_positional_parameters_get_the_new_shape(db: Database) -> None:
    """A callable taking two positional arguments (or *args, or a partial leaving two) gets (done, total)."""
    person = _rotating(db)
    calls: list[Any] = []

    class Recorder:
        def __call__(self, done: int, total: int | None, extra: str = "x") -> None:
            calls.append(("method", done, total, extra))

    def collect(label: str, done: int, total: int | None) -> None:
        calls.append((label, done, total))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rotate_keys(person, ["email"], batch_size=100, progress=Recorder())
        kit = pk.get_kit(db)
        kit.keys = KeyRing({"k3": K3, "k2": K2, "k1": K1})
        rotate_keys(person, ["email"], batch_size=100, progress=lambda *args: calls.append(args))
        kit.keys = KeyRing({"k4": K4, "k3": K3, "k2": K2, "k1": K1})
        rotate_keys(person, ["email"], batch_size=100, progress=functools.partial(collect, "partial"))
    assert calls == [
        ("method", 100, 120, "x"),
        ("method", 120, 120, "x"),
        (100, 120),
        (120, 120),
        ("partial", 100, 120),
        ("partial", 120, 120),
    ]


def test_one_argument_callback_is_deprecated_but_works(db: Database) -> None:
    """A callable of one positional parameter gets RotationProgress reports, with one DeprecationWarning."""
    person = _rotating(db)
    reports: list[RotationProgress] = []
    with pytest.warns(DeprecationWarning, match=r"progress.*\(done, total\)") as caught:
        done = rotate_keys(person, batch_size=100, progress=reports.append)
    assert len(caught) == 1
    assert caught[0].filename == __file__  # points at the caller
    assert done == 2 * ROWS
    assert [(r.entity, r.attribute, r.done, r.total) for r in reports] == [
        ("Person", "email", 100, 240),
        ("Person", "email", 120, 240),
        ("Person", "note", 220, 240),
        ("Person", "note", 240, 240),
    ]


@pytest.mark.backends("sqlite")
def test_batch_size_default_and_errors_match_bulk(db: Database) -> None:
    """batch_size=None (the default) is bulk's 10,000 rows; bad sizes raise ConfigurationError (a
    ValueError) naming the function, batch_size and the value, in bulk's words."""
    from ponykit.bulk import _batch

    assert rotation.DEFAULT_BATCH_SIZE == _batch.DEFAULT_BATCH_SIZE == 10_000
    assert rotation.rotate_keys.__kwdefaults__["batch_size"] is None
    person = _rotating(db)
    for bad in (0, -5, 2.5, "10", True):
        with pytest.raises(ConfigurationError) as caught:
            rotate_keys(person, batch_size=bad)
        assert isinstance(caught.value, ValueError)
        assert (
            str(caught.value) == f"rotate_keys(): batch_size must be a positive number of rows, got {bad!r}"
        )
    seen: list[tuple[int, int | None]] = []
    assert rotate_keys(person, progress=lambda done, total: seen.append((done, total))) == 2 * ROWS
    assert seen == [(ROWS, 2 * ROWS), (2 * ROWS, 2 * ROWS)]  # one batch per attribute


@pytest.mark.backends("sqlite")
def test_progress_must_be_callable(db: Database) -> None:
    """A progress that is not callable is refused before anything runs."""
    person = _rotating(db)
    with pytest.raises(ConfigurationError, match=r"progress\(done, total\)"):
        rotate_keys(person, progress=[])  # type: ignore[arg-type]
    assert under(db, "k2") == 0

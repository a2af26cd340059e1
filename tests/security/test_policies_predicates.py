"""The door's predicate helpers (``ponykit._pony.predicates``): decompiling a policy predicate, the free
names it reads, OR-ing several into one filter text with their names renamed apart."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from pony.orm import count, exists

from ponykit import _pony

LIMIT = 3


def _make_closure(k: int) -> Any:
    def pred(o: Any, user: Any) -> Any:
        """A docstring does not count as a statement."""
        return o.n == k and exists(x for x in o.items if x.v == user.v)

    return pred


def test_predicate_of_reads_args_body_and_free_names() -> None:
    pred = _pony.predicate_of(_make_closure(5))
    assert (pred.obj_name, pred.principal_name) == ("o", "user")
    assert pred.free_names == ("k", "exists")  # the generator's x is bound, o and user are the arguments
    assert pred.value_of("k") == 5
    assert pred.value_of("exists") is exists
    assert pred.value_of("len") is len  # builtins
    with pytest.raises(NameError, match="nowhere"):
        pred.value_of("nowhere")
    assert "test_policies_predicates" in pred.label


@pytest.mark.parametrize(
    ("func", "words"),
    [
        (lambda o: o.x, "two positional arguments"),
        (lambda o, u, w: o.x, "two positional arguments"),
        (lambda o, *u: o.x, "two positional arguments"),
        (len, "lambda or a def"),
    ],
)
def test_predicate_of_refuses_other_callables(func: Any, words: str) -> None:
    with pytest.raises(_pony.PredicateError, match=words):
        _pony.predicate_of(func)


def test_predicate_of_refuses_statements() -> None:
    def two_statements(o: Any, user: Any) -> Any:
        if user.admin:
            return True
        return o.owner == user.id

    with pytest.raises(_pony.PredicateError, match="one expression|single"):
        _pony.predicate_of(two_statements)


def test_one_predicate_keeps_its_text_and_module_globals() -> None:
    pred = _pony.predicate_of(lambda o, u: o.n < LIMIT or u.admin)
    combined = _pony.combine([pred])
    assert combined.text == "lambda o: o.n < LIMIT or u.admin"
    assert combined.globals is pred.func.__globals__
    assert combined.namespace("P") == {"u": "P"}  # globals are read from the module, not copied


def test_several_predicates_are_renamed_apart_and_or_ed() -> None:
    first = _pony.predicate_of(_make_closure(1))
    second = _pony.predicate_of(lambda row, p: count(row.items) > LIMIT and row.k == p.k)
    combined = _pony.combine([first, second])
    tree = ast.parse(combined.text, mode="eval").body
    assert isinstance(tree, ast.Lambda)
    assert [a.arg for a in tree.args.args] == ["obj"]
    assert isinstance(tree.body, ast.BoolOp)
    assert isinstance(tree.body.op, ast.Or)
    assert len(tree.body.values) == 2
    # The free ``k`` of the first (a closure) and the attribute ``.k`` of the second do not collide.
    assert "k_1" in combined.text
    assert "row.k" not in combined.text
    assert "obj.k == principal.k" in combined.text
    assert "for x in obj.items" in combined.text  # comprehension variables keep their names
    values = combined.namespace("P")
    assert values["principal"] == "P"
    assert values["k_1"] == 1
    assert values["exists_1"] is exists
    assert values["count_2"] is count
    assert values["LIMIT_2"] == LIMIT
    assert combined.globals == {"__builtins__": __builtins__} or "__builtins__" in combined.globals


def test_renaming_avoids_names_already_used() -> None:
    # A predicate whose own names are ``obj`` and ``principal``: the combined names must not capture them.
    first = _pony.predicate_of(lambda obj, principal: obj.a == principal.a)
    second = _pony.predicate_of(lambda x, y: exists(obj for obj in x.items if obj.v == y.v))
    combined = _pony.combine([first, second])
    tree = ast.parse(combined.text, mode="eval").body
    assert isinstance(tree, ast.Lambda)
    arg = tree.args.args[0].arg
    assert arg != "obj"  # "obj" is a comprehension variable of the second predicate
    assert f"for obj in {arg}.items" in combined.text


def test_closure_values_are_read_at_each_call() -> None:
    holder = [1]

    def pred(o: Any, u: Any) -> Any:
        return o.n == holder[0]

    combined = _pony.combine([_pony.predicate_of(pred), _pony.predicate_of(lambda o, u: o.n == 0)])
    first = combined.namespace(None)
    holder = [2]  # rebinds the cell
    second = combined.namespace(None)
    assert first["holder_1"] == [1]
    assert second["holder_1"] == [2]


def test_closure_names_right_when_an_argument_is_captured() -> None:
    """Pony 0.7.20 on Python 3.11/3.12 shifts closure names when a generator captures an argument
    (``lambda o: o.n == k and exists(x for x in B if x.a == o)`` reads ``k`` as ``o``); the door reads
    them right, including a direct read of the captured argument."""

    def make(k: int) -> Any:
        def pred(o: Any, user: Any) -> Any:
            return user.admin or (o.n == k and exists(x for x in o.items if x.v == user.v))

        return pred

    pred = _pony.predicate_of(make(7))
    assert (
        ast.unparse(pred.body) == "user.admin or (o.n == k and exists((x for x in o.items if x.v == user.v)))"
    )
    assert pred.free_names == ("k", "exists")
    assert pred.value_of("k") == 7


def test_nested_generators_keep_their_names() -> None:
    def make(k: int) -> Any:
        return lambda o, u: (
            exists(x for x in o.items if exists(y for y in x.subs if y.v == x.v and y.w == u.w)) and o.n == k
        )

    pred = _pony.predicate_of(make(4))
    assert ast.unparse(pred.body) == (
        "exists((x for x in o.items if exists((y for y in x.subs if y.v == x.v and y.w == u.w))))"
        " and o.n == k"
    )
    assert pred.free_names == ("exists", "k")
    combined = _pony.combine([pred, _pony.predicate_of(lambda a, b: a.n == b.n)])
    assert "exists_1((x for x in obj.items if exists_1((y for y in x.subs if y.v == x.v" in combined.text
    assert "o.n == k_1" not in combined.text
    assert "obj.n == k_1" in combined.text

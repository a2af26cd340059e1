"""Pony predicates as query filters: a two-argument function ``(obj, principal) -> condition`` written in
Pony's query language, turned into the one-argument filter text Pony's ``Query.filter`` accepts.

Pony decompiles a predicate's bytecode into a Python AST (``pony.orm.decompiling.decompile``); its
``Query.filter(text, globals, locals)`` takes a lambda's *text* with the namespaces its names come from, and
caches the translation by that text. So a predicate is decompiled once (:func:`predicate_of`), several
predicates are OR-ed into one lambda text once (:func:`combine`), and each call only binds values
(:meth:`Combined.namespace`) and asks Pony to filter (:func:`filter_text`): the principal is a variable
of the query, its attributes are read in Python (as for any external expression in a Pony query) and sent
as parameters, so the SQL text stays the same from one principal to the next.
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pony.orm import select
from pony.orm.asttranslation import TranslationError
from pony.orm.core import ExprEvalError
from pony.orm.decompiling import DecompileError, Decompiler, decompile

from ..errors import PonykitError

__all__ = [
    "Combined",
    "Predicate",
    "PredicateError",
    "combine",
    "filter_text",
    "predicate_of",
    "select_text",
]


class PredicateError(Exception):
    """A function cannot be a Pony predicate, or Pony cannot apply one; the message says why (the caller
    wraps it in its own error). ``evaluation`` is True when an expression on the principal failed in
    Python (the principal lacks an attribute the predicate reads), False when Pony cannot translate it."""

    def __init__(self, message: str, *, evaluation: bool = False) -> None:
        super().__init__(message)
        self.evaluation = evaluation


@contextmanager
def _translating() -> Iterator[None]:
    # Only translation runs here (no SQL): Pony reports what it cannot translate as TranslationError, and
    # as AttributeError / TypeError / NotImplementedError for an unknown method or operand.
    try:
        yield
    except PonykitError:
        raise  # a ponykit converter's own error (an unsupported comparison ...) already says what is wrong
    except ExprEvalError as exc:
        raise PredicateError(str(exc), evaluation=True) from exc
    except (TranslationError, AttributeError, TypeError, NotImplementedError) as exc:
        raise PredicateError(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class Predicate:
    """A decompiled two-argument predicate: its argument names, its body and where its names come from."""

    func: Callable[..., Any]
    obj_name: str
    principal_name: str
    body: ast.expr
    free_names: tuple[str, ...]  # names read by the body other than its two arguments, in order of use
    cells: dict[str, Any]  # closure cells by name (read at each call: a closure's value may change)

    @property
    def label(self) -> str:
        """``module.qualname`` of the predicate, for messages."""
        return f"{self.func.__module__}.{self.func.__qualname__}"

    def value_of(self, name: str) -> Any:
        """The current value of a free name as Python would find it (closure, module globals, builtins);
        raises NameError like Python when there is none."""
        cell = self.cells.get(name)
        if cell is not None:
            return cell.cell_contents
        namespace = self.func.__globals__
        if name in namespace:
            return namespace[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise NameError(f"name {name!r} used by the predicate {self.label} is not defined")


def _free_names(body: ast.expr, bound: set[str]) -> list[str]:
    """Names ``body`` reads that no lambda or comprehension inside it binds, in order of first use."""
    found: list[str] = []

    def visit(node: ast.AST, scope: frozenset[str]) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id not in scope and node.id not in found:
                found.append(node.id)
            return
        if isinstance(node, ast.Lambda):
            args = {a.arg for a in node.args.args}
            visit(node.body, scope | args)
            return
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            inner = scope
            for comp in node.generators:
                # A comprehension's first iterable is read in the enclosing scope, later ones in the inner.
                visit(comp.iter, inner)
                inner = inner | {n.id for n in ast.walk(comp.target) if isinstance(n, ast.Name)}
                for cond in comp.ifs:
                    visit(cond, inner)
            if isinstance(node, ast.DictComp):
                visit(node.key, inner)
                visit(node.value, inner)
            else:
                visit(node.elt, inner)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(body, frozenset(bound))
    return found


class _Renamer(ast.NodeTransformer):
    """Renames the free names of an expression (comprehension variables stay as they are)."""

    def __init__(self, renames: dict[str, str], bound: frozenset[str] = frozenset()) -> None:
        self.renames = renames
        self.bound = bound

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.renames and node.id not in self.bound:
            return ast.copy_location(ast.Name(id=self.renames[node.id], ctx=ast.Load()), node)
        return node

    def _scoped(self, node: ast.AST, names: Iterable[str]) -> ast.AST:
        inner = _Renamer(self.renames, self.bound | frozenset(names))
        return inner.generic_visit(node)

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return self._scoped(node, (a.arg for a in node.args.args))

    def _comprehension(self, node: ast.GeneratorExp | ast.ListComp | ast.SetComp | ast.DictComp) -> ast.AST:
        bound = self.bound
        for comp in node.generators:
            comp.iter = _Renamer(self.renames, bound).visit(comp.iter)
            bound = bound | {n.id for n in ast.walk(comp.target) if isinstance(n, ast.Name)}
            comp.ifs = [_Renamer(self.renames, bound).visit(c) for c in comp.ifs]
        inner = _Renamer(self.renames, bound)
        if isinstance(node, ast.DictComp):
            node.key = inner.visit(node.key)
            node.value = inner.visit(node.value)
        else:
            node.elt = inner.visit(node.elt)
        return node

    visit_GeneratorExp = visit_ListComp = visit_SetComp = visit_DictComp = _comprehension


# Pony 0.7.20 on Python 3.11 and 3.12 maps a closure instruction's argument to a name as
# ``(co_cellvars + co_freevars)[oparg - len(co_varnames)]``. That holds only while no argument is also a
# cell; when a generator expression inside the predicate captures the object or the principal
# (``exists(x for x in Item if x.owner == user)``), the argument keeps its slot and every closure
# variable's name comes out shifted: ``o.n == k`` decompiles as ``o.n == user``. Python 3.13 is read with
# ``_varname_from_oparg`` and is right.
_SHIFTED_CELLS = (3, 11) <= sys.version_info[:2] < (3, 13)


class _CodeView:
    """The attributes of a code object Pony's ``Decompiler`` reads, with cell names laid out so that its
    index arithmetic lands on the right name: cells that are not arguments, then free variables (reached
    by ``oparg - len(co_varnames)`` >= 0), then the arguments themselves (reached by the negative index
    that arithmetic gives for an argument's own slot)."""

    def __init__(self, code: types.CodeType) -> None:
        self.co_code = code.co_code
        self.co_consts = code.co_consts
        self.co_names = code.co_names
        self.co_varnames = code.co_varnames
        extra = tuple(name for name in code.co_cellvars if name not in code.co_varnames)
        self.co_cellvars = extra + code.co_freevars + code.co_varnames
        self.co_freevars = ()


def _argument_cells(code: types.CodeType) -> bool:
    return bool(set(code.co_cellvars) & set(code.co_varnames))


def _nested_codes(code: types.CodeType) -> list[types.CodeType]:
    found = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.append(const)
            found.extend(_nested_codes(const))
    return found


def _decompile(func: types.FunctionType) -> tuple[ast.AST, dict[str, Any]]:
    code = func.__code__
    cells = dict(zip(code.co_freevars, func.__closure__ or (), strict=True))
    if not (_SHIFTED_CELLS and _argument_cells(code)):
        body, _external, _cells = decompile(func)
        return body, cells
    for nested in _nested_codes(code):
        # A lambda inside the predicate with a captured argument of its own: Pony decompiles that code
        # object itself, so the view above cannot help; refuse rather than translate the wrong names.
        if _argument_cells(nested) and any(i.opcode in dis.hasfree for i in dis.get_instructions(nested)):
            raise PredicateError(
                "a lambda inside it captures one of its own arguments in a nested generator, which Pony's "
                "decompiler misreads on this Python version; write that part without the inner lambda"
            )
    return Decompiler(_CodeView(code)).ast, cells


def predicate_of(func: Callable[..., Any]) -> Predicate:
    """Decompile ``func``, a lambda or a ``def`` whose body is one ``return <expression>``, taking exactly
    two positional arguments ``(obj, principal)``. Raises :class:`PredicateError` saying what is wrong."""
    func = inspect.unwrap(func)
    if not isinstance(func, types.FunctionType):
        raise PredicateError(f"a predicate must be a lambda or a def, got {type(func).__name__}")
    code = func.__code__
    if (
        code.co_argcount != 2
        or code.co_posonlyargcount
        or code.co_kwonlyargcount
        or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    ):
        raise PredicateError(
            "a predicate takes exactly two positional arguments, the object and the principal "
            "(lambda order, user: ...)"
        )
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        raise PredicateError("a predicate is a plain function, not a generator or a coroutine")
    obj_name, principal_name = code.co_varnames[:2]
    try:
        body, cells = _decompile(func)
    except (DecompileError, NotImplementedError, IndexError, AssertionError) as exc:
        # Pony's decompiler raises these for what it cannot read (a statement, a chained comparison on
        # some Python versions, a conditional expression ...).
        raise PredicateError(
            f"Pony cannot read it as one expression ({type(exc).__name__}: {exc}); write the body as a "
            "single `return <condition>` in Pony's query language (use `and`/`or`, not statements)"
        ) from exc
    if not isinstance(body, ast.expr):
        raise PredicateError("its body is not one expression")
    free = tuple(_free_names(body, {obj_name, principal_name}))
    return Predicate(func, obj_name, principal_name, body, free, cells)


def _fresh(name: str, taken: set[str]) -> str:
    candidate = name
    while candidate in taken:
        candidate += "_"
    taken.add(candidate)
    return candidate


def _all_names(node: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    names |= {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
    return names


@dataclass(frozen=True, eq=False)
class Combined:
    """Several predicates OR-ed into one filter: the lambda text Pony caches by, and where each name of
    the text gets its value from."""

    text: str  # "lambda o: <condition>", for Query.filter
    principal_name: str
    sources: tuple[tuple[str, Predicate, str], ...]  # (name in the text, predicate, its name there)
    globals: dict[str, Any]  # the one predicate's module globals, or an empty namespace when renamed
    generator: str  # "o for o in <entity_name> if <condition>", for select() straight from the entity
    entity_name: str  # a name no predicate uses, bound to the entity for ``generator``

    def namespace(self, principal: Any) -> dict[str, Any]:
        """The locals a call of the filter needs: the principal and the current value of every name."""
        values = {self.principal_name: principal}
        for name, pred, original in self.sources:
            try:
                values[name] = pred.value_of(original)
            except NameError:
                # Left out: Pony's evaluation of the filter then raises its own NameError, naming the
                # expression, as it would for a plain query.
                continue
        return values


def combine(predicates: Iterable[Predicate]) -> Combined:
    """One filter that is true where any of ``predicates`` is (OR). With one predicate its text is the
    predicate's own (its names read from its module); with several, each predicate's free names are
    renamed apart (two modules may use one name for different things) and given as locals."""
    preds = list(predicates)
    assert preds, "combine() needs at least one predicate"  # the caller refuses an empty policy list
    if len(preds) == 1:
        pred = preds[0]
        condition = ast.unparse(pred.body)
        sources = tuple((name, pred, name) for name in pred.free_names if name in pred.cells)
        used = _all_names(pred.body) | {pred.obj_name, pred.principal_name}
        entity_name = _fresh("Entity", used)
        return Combined(
            f"lambda {pred.obj_name}: {condition}",
            pred.principal_name,
            sources,
            pred.func.__globals__,
            f"{pred.obj_name} for {pred.obj_name} in {entity_name} if {condition}",
            entity_name,
        )
    taken: set[str] = set()
    for pred in preds:
        taken |= _all_names(pred.body)
    obj_name = _fresh("obj", taken)
    principal_name = _fresh("principal", taken)
    entity_name = _fresh("Entity", taken)
    parts = []
    renamed: list[tuple[str, Predicate, str]] = []
    for number, pred in enumerate(preds, 1):
        renames = {pred.obj_name: obj_name, pred.principal_name: principal_name}
        for name in pred.free_names:
            renames[name] = _fresh(f"{name}_{number}", taken)
            renamed.append((renames[name], pred, name))
        body = _Renamer(renames).visit(_copy(pred.body))
        parts.append(f"({ast.unparse(body)})")
    condition = " or ".join(parts)
    return Combined(
        f"lambda {obj_name}: {condition}",
        principal_name,
        tuple(renamed),
        {"__builtins__": builtins},
        f"{obj_name} for {obj_name} in {entity_name} if {condition}",
        entity_name,
    )


def _copy(node: ast.expr) -> ast.expr:
    # Pony's decompiler caches its AST per code object: rename a copy, never the cached tree.
    copied: ast.expr = ast.parse(ast.unparse(node), mode="eval").body
    return copied


def select_text(entity: Any, combined: Combined, principal: Any) -> Any:
    """``select(o for o in entity if <combined>)`` for ``principal``: the same rows as
    ``filter_text(entity.select(), ...)`` in one translation step instead of two (Pony's
    ``select(text, globals, locals)`` caches the translation by the text, as ``filter`` does). Raises
    :class:`PredicateError` as :func:`filter_text` does."""
    namespace = combined.namespace(principal)
    namespace[combined.entity_name] = entity
    with _translating():
        return select(combined.generator, combined.globals, namespace)


def filter_text(query: Any, combined: Combined, principal: Any) -> Any:
    """``query`` filtered by ``combined`` for ``principal`` (a new Pony query, still lazy and chainable).

    Raises :class:`PredicateError` when Pony cannot evaluate or translate it. Pony's
    ``Query.filter(text, globals, locals)`` evaluates the text's external expressions in those
    namespaces (``get_globals_and_locals``, ``extract_vars``) and caches the translation by the text and
    the types of the values, so the SQL is built once per predicate set and principal type.
    """
    with _translating():
        return query.filter(combined.text, combined.globals, combined.namespace(principal))

"""A job given to :func:`mapreduce.run` as a module or as an object, written as a job file.

Workers run job files: code they import from the job's source.  A job given as a path is
that file; a module imported from a file (not ``__main__``) is its file.  Any other
object with ``map`` and ``reduce`` attributes (a notebook's functions, a class, a
``types.SimpleNamespace``, the ``__main__`` module) is written out as two files, which
every runner (``local=True`` too) then uses like any job file:

* a helper module holding, *by source*, each of the job's functions and what they use
  from their own module or from ``__main__`` (other functions, classes), *by import*
  the modules and the objects of other modules they use (``import re``, ``from
  collections import Counter``: those must be installed on the workers), and *by value*
  (pickled) the other values they read (constants, tables, a ``RangePartitioner``);
* the job file, which imports the job's attributes from it under the names the job
  contract wants (``map``, ``reduce``, ...).

What cannot be shipped is refused before anything runs, saying why: lambdas and
decorated functions (their source is not a definition to run again), closures (the
values they close over are not globals), and globals that cannot be pickled.
"""

from __future__ import annotations

import ast
import dis
import hashlib
import inspect
import os
import pickle
import sys
import textwrap
import types
from typing import Any

from mapreduce.errors import UsageError
from mapreduce.jobfile import JOB_ATTRIBUTES

#: The name the shipped module imports pickle as (not one a job's code would use).
_PICKLE = "_mapreduce_pickle"


def job_files(job: Any, directory: str) -> tuple[str, tuple[str, ...]]:
    """The job file that runs ``job``, and the helper modules to ship beside it.

    Args:
        job: a path, a module or an object with ``map`` and ``reduce`` attributes.
        directory: where generated files are written (the caller removes it).

    Raises:
        UsageError: ``job`` cannot be shipped; the message says what and why.
    """
    if isinstance(job, str | os.PathLike):
        return os.fspath(job), ()
    if isinstance(job, types.ModuleType) and job.__name__ != "__main__":
        path = getattr(job, "__file__", None)
        if path and path.endswith(".py"):
            return path, ()
    for name in ("map", "reduce"):
        if name == "map" and callable(getattr(job, "map_split", None)):
            continue
        if not callable(getattr(job, name, None)):
            raise UsageError(
                f"the job {job!r} has no `{name}` function: give a job file's path, a module "
                "or an object with map (or map_split) and reduce functions"
            )
    builder = _Builder(job)
    imports: list[str] = []
    for attribute in JOB_ATTRIBUTES:
        value = getattr(job, attribute, None)
        if value is None:
            continue
        bound = builder.bind(attribute, value, f"the job's {attribute}")
        imports.append(f"{bound} as {attribute}" if bound != attribute else attribute)
    helper_source = builder.source()
    digest = hashlib.sha256(helper_source.encode()).hexdigest()[:16]
    helper = f"_mapreduce_shipped_{digest}"
    label = getattr(job, "__name__", "") or "job"
    label = "".join(c if c.isalnum() or c == "_" else "_" for c in label).strip("_") or "job"
    job_path = os.path.join(directory, f"{label}.py")
    helper_path = os.path.join(directory, f"{helper}.py")
    with open(helper_path, "w", encoding="utf-8") as f:
        f.write(helper_source)
    with open(job_path, "w", encoding="utf-8") as f:
        f.write(
            f'"""{label}: a job shipped by mapreduce.run() (its code: {helper}.py)."""\n\n'
            f"from {helper} import {', '.join(imports)}  # noqa: F401\n"
        )
    return job_path, (helper_path,)


class _Builder:
    """Collects the source of a helper module: imports, values, classes and functions."""

    def __init__(self, job: Any) -> None:
        # Functions and classes of these modules are shipped by source.
        self.home = {"__main__"}
        for attribute in JOB_ATTRIBUTES:
            value = getattr(job, attribute, None)
            if isinstance(value, types.FunctionType):
                self.home.add(value.__module__)
        self.bound: dict[str, Any] = {}
        self.imports: list[str] = []
        self.values: list[str] = []
        self.definitions: list[str] = []

    def source(self) -> str:
        # Annotations stay strings: the names they use need not be shipped.
        head = (
            '"""Shipped by mapreduce.run(): the job\'s code, its imports and values."""\n\n'
            "from __future__ import annotations\n\n"
        )
        parts = [
            "\n".join(sorted(set(self.imports))),
            "\n".join(self.values),
            "\n\n\n".join(self.definitions),
        ]
        return head + "\n\n".join(p for p in parts if p) + "\n"

    def _claim(self, name: str, value: Any, what: str) -> bool:
        """Bind ``name`` to ``value``; False when it already is.

        Raises:
            UsageError: ``name`` is bound to something else already.
        """
        if name in self.bound:
            if self.bound[name] is value:
                return False
            raise UsageError(
                f"{what}: the name {name!r} stands for two different things in the job's "
                "code; rename one"
            )
        self.bound[name] = value
        return True

    def bind(self, name: str, value: Any, what: str) -> str:
        """Make ``value`` available in the helper module; return the name it has there."""
        if isinstance(value, types.FunctionType) and value.__module__ in self.home:
            self._function(value, what)
            return value.__name__
        if isinstance(value, type) and value.__module__ in self.home:
            self._class(value, what)
            return value.__name__
        if isinstance(value, types.ModuleType):
            if self._claim(name, value, what):
                self.imports.append(
                    f"import {value.__name__}"
                    if value.__name__ == name
                    else f"import {value.__name__} as {name}"
                )
            return name
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if (
            callable(value)
            and isinstance(module, str)
            and isinstance(qualname, str)
            and module not in self.home
            and "<" not in qualname
            and "." not in qualname
        ):
            if self._claim(name, value, what):
                alias = "" if qualname == name else f" as {name}"
                self.imports.append(f"from {module} import {qualname}{alias}")
            return name
        if self._claim(name, value, what):
            if _is_literal(value):  # readable: INPUT_FORMAT = 'jsonl'
                self.values.append(f"{name} = {value!r}")
                return name
            try:
                data = pickle.dumps(value)
            except Exception as exc:
                raise UsageError(
                    f"{what}: {name} cannot be shipped by value ({type(exc).__name__}: {exc})"
                ) from None
            if _PICKLE not in self.bound:
                self._claim(_PICKLE, pickle, what)
                self.imports.append(f"import pickle as {_PICKLE}")
            self.values.append(f"{name} = {_PICKLE}.loads({data!r})")
        return name

    def _function(self, fn: types.FunctionType, what: str) -> None:
        what = f"{what} ({fn.__module__}.{fn.__qualname__})"
        if fn.__name__ == "<lambda>":
            raise UsageError(f"{what}: a lambda cannot be shipped; define it with def")
        if fn.__closure__:
            names = ", ".join(fn.__code__.co_freevars)
            raise UsageError(
                f"{what}: a closure (over {names}) cannot be shipped; define it at the top "
                "level and pass values with params="
            )
        if not self._claim(fn.__name__, fn, what):
            return
        source = _source(fn, what)
        if source.startswith("@staticmethod\n"):  # a job class's function
            source = source.removeprefix("@staticmethod\n")
        if not source.startswith(("def ", "async def ")):
            raise UsageError(f"{what}: a decorated function cannot be shipped by source")
        self._globals(fn.__code__, fn.__globals__, what)
        self._names(_definition_names(source), fn.__globals__, what)
        self.definitions.append(source.rstrip())

    def _class(self, cls: type, what: str) -> None:
        what = f"{what} ({cls.__module__}.{cls.__qualname__})"
        if not self._claim(cls.__name__, cls, what):
            return
        source = _source(cls, what)
        if not source.startswith("class "):
            raise UsageError(f"{what}: a decorated class cannot be shipped by source")
        module = sys.modules.get(cls.__module__)
        self._names(_definition_names(source), vars(module) if module else {}, what)
        for member in vars(cls).values():
            fn = member.__func__ if isinstance(member, staticmethod | classmethod) else member
            if isinstance(fn, types.FunctionType):
                self._globals(fn.__code__, fn.__globals__, what)
        self.definitions.append(source.rstrip())

    def _globals(self, code: types.CodeType, namespace: dict[str, Any], what: str) -> None:
        """Bind every global name ``code`` (and the code nested in it) reads."""
        self._names(_global_names(code), namespace, what)

    def _names(self, names: set[str], namespace: dict[str, Any], what: str) -> None:
        for name in sorted(names):
            if name in namespace:
                self.bind(name, namespace[name], what)


def _source(obj: Any, what: str) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        raise UsageError(f"{what}: its source cannot be found ({exc})") from None


def _is_literal(value: Any) -> bool:
    """Whether ``repr(value)`` is a Python literal that gives ``value`` back exactly."""
    try:
        again = ast.literal_eval(repr(value))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return type(again) is type(value) and bool(again == value)


def _definition_names(source: str) -> set[str]:
    """The names a ``def`` or ``class`` statement reads when it runs: default values, bases,
    class bodies (not what its functions read when called: see :func:`_global_names`)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
            for expression in defaults:
                visit(expression)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in ast.parse(source).body:
        visit(statement)
    return names


def _global_names(code: types.CodeType) -> set[str]:
    names: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL"):
            names.add(str(instruction.argval))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names

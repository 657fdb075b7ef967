"""Every module's ``__all__`` is sorted and complete, and the package re-exports all of them."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import attune_client

MODULES = sorted(info.name for info in pkgutil.iter_modules(attune_client.__path__, "attune_client."))


def isort_key(name: str) -> tuple[int, list[int | str]]:
    """Ruff RUF022's "isort-style" order: SCREAMING_CASE, then CamelCase, then the rest; natural within each."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def defined_public_names(module: ModuleType) -> set[str]:
    """Names a module's own top-level code binds (classes, functions, assignments), minus private ones."""
    names: set[str] = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_every_module_is_checked() -> None:
    assert {"attune_client.env", "attune_client.errors", "attune_client.http", "attune_client.wire"} <= set(MODULES)


@pytest.mark.parametrize("name", ["attune_client", *MODULES])
def test_all_is_sorted_unique_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=isort_key)
    assert len(set(exported)) == len(exported)
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names undefined {missing}"


@pytest.mark.parametrize("name", ["attune_client", *MODULES])
def test_all_lists_every_public_definition(name: str) -> None:
    module = importlib.import_module(name)
    unlisted = defined_public_names(module) - set(module.__all__)
    assert not unlisted, f"{name} defines public names missing from __all__: {sorted(unlisted)}"


def test_package_reexports_every_module() -> None:
    expected = set().union(*(importlib.import_module(name).__all__ for name in MODULES))
    assert set(attune_client.__all__) == expected | defined_public_names(attune_client)
    for name in expected:
        module_objects = [vars(importlib.import_module(m)).get(name) for m in MODULES]
        assert getattr(attune_client, name) in module_objects


# wire.py's models document each field with Field(description=...) instead; it is not ours to edit here.
@pytest.mark.parametrize("name", [m for m in MODULES if m != "attune_client.wire"])
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    undocumented = [
        attr
        for attr in module.__all__
        if (inspect.isclass(obj := getattr(module, attr)) or inspect.isfunction(obj))
        and obj.__module__ == name
        and not obj.__doc__
    ]
    assert undocumented == [], f"{name}: {undocumented}"

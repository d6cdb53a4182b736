"""The domain and the use cases import no transport, storage, wiring or generated code."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
INNER_LAYERS = ("domain", "usecases")
FORBIDDEN = frozenset(
    {
        "grpc",
        "google",
        "asyncpg",
        "redis",
        "findmy",
        "adapters",
        "servers",
        "tracker",
        "dependency_injector",
        "opentelemetry",
    }
)


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of every module ``source`` (the module ``module``) imports, anywhere."""
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" if name else alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in {
                "import_module",
                "__import__",
            }
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def forbidden_imports(source: str, module: str) -> set[str]:
    return {m for m in imported_modules(source, module) if m.split(".")[0] in FORBIDDEN}


def inner_layer_files() -> list[pathlib.Path]:
    return sorted(p for layer in INNER_LAYERS for p in (SRC / layer).rglob("*.py"))


def module_name(path: pathlib.Path) -> str:
    """Dotted name; a package's ``__init__`` keeps its suffix so its package resolves right."""
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


def test_the_inner_layers_have_files_to_check() -> None:
    names = {module_name(p) for p in inner_layer_files()}
    assert {"domain.model", "domain.ports.setup", "usecases.setup", "usecases.health"} <= names


@pytest.mark.parametrize("path", inner_layer_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_inner_layer_module_imports_nothing_outer(path: pathlib.Path) -> None:
    assert forbidden_imports(path.read_text(), module_name(path)) == set()


@pytest.mark.parametrize(
    "source",
    [
        "import grpc",
        "import google.protobuf.timestamp_pb2",
        "from google.protobuf import timestamp_pb2",
        "import asyncpg as pg",
        "from redis.asyncio import Redis",
        "import findmy",
        "from adapters.postgres.setup import PostgresClientRepository",
        "from servers import config",
        "from tracker.v1 import resources_pb2",
        "from dependency_injector import containers",
        "def f():\n    import asyncpg",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grpc",
        "import importlib\nimportlib.import_module('redis')",
        "__import__('grpc')",
        "from .. import adapters",
        "from ..servers import config",
    ],
)
def test_checker_catches_every_kind_of_forbidden_import(source: str) -> None:
    assert forbidden_imports(source, "domain.model")


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "from domain.model import Client",
        "from domain import errors",
        "from . import errors",
        "from .errors import NotFound",
        "import hashlib, uuid",
        "trackers = 1",
    ],
)
def test_checker_allows_the_standard_library_and_the_domain(source: str) -> None:
    assert forbidden_imports(source, "domain.model") == set()

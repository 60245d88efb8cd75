"""Shared fixtures: import generated source as a module, cache generation, run the CLI.

Generation goes through the public path (``generate_module(spec)``) and the source is
imported from a real file, the way a user imports it. Each distinct spec is generated
once per test session.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from chainrule.codegen.emit import lint_module
from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "generated"
_counter = itertools.count()


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder holding the modules the tests generate."""
    return tmp_path_factory.mktemp("modules")


def import_path(path: Path) -> ModuleType:
    """Import a Python file under a fresh private module name."""
    name = f"_chainrule_test_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_source(module_dir: Path) -> Callable[[str], ModuleType]:
    """Write module source to a file in the session folder and import it."""

    def load(source: str) -> ModuleType:
        path = module_dir / f"mod_{next(_counter)}.py"
        path.write_text(source, encoding="utf-8")
        return import_path(path)

    return load


@pytest.fixture(scope="session")
def build(load_source: Callable[[str], ModuleType]) -> Callable[[Spec], ModuleType]:
    """Generate the module of a spec (once per session), lint it as the CLI does, import it."""
    cache: dict[tuple, ModuleType] = {}

    def make(spec: Spec) -> ModuleType:
        key = (repr(spec.to_dict()), spec.source)
        if key not in cache:
            source = generate_module(spec)
            lint_module(source)
            cache[key] = load_source(source)
        return cache[key]

    return make


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m chainrule ARGS`` in ``cwd``; returns the completed process."""

    def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "chainrule", *args],
            cwd=cwd or REPO,
            env=cli_env(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run

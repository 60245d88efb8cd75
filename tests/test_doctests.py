"""The docstring examples of every chainrule module run, as installed.

They are collected by import name (``chainrule.derive.spec``), not by file path: the
repository keeps ``derive/`` and ``codegen/`` at its top level, and importing those
folders by path would load a second copy of each module under a generic name.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import chainrule


def _module_names() -> list[str]:
    names = ["chainrule"]
    for info in pkgutil.walk_packages(chainrule.__path__, "chainrule."):
        names.append(info.name)
    for package in ("chainrule.derive", "chainrule.codegen"):
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]
    return sorted(set(names) - {"chainrule.__main__"})


MODULES = _module_names()


def test_every_package_is_walked():
    assert "chainrule.derive.spec" in MODULES and "chainrule.codegen.emit" in MODULES


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in finder.find(module, name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)

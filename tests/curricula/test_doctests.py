"""The >>> examples in curricula/ run."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["curricula.base", "curricula.pass_rate_gaussian", "curricula.split"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0, module

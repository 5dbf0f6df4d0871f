"""The >>> examples in genrm's docstrings are part of the documentation: they must stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["genrm.comparisons", "genrm.length_control", "genrm.judge", "genrm.synthetic",
                                    "environments.chat"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0

"""Fixtures of the tests (the session set-up, for the notebooks too, is in the root conftest.py)."""

import pytest


@pytest.fixture
def outputs(tmp_path):
    """A fresh outputs directory for one test."""
    return tmp_path / "outputs"

"""Fixtures of the tests (the session set-up, for the notebooks too, is in the root conftest.py)."""

import pytest


@pytest.fixture
def outputs(tmp_path):
    """A fresh outputs directory for one test."""
    return tmp_path / "outputs"


@pytest.fixture
def tick_clock(monkeypatch):
    """The training loop's clock, made deterministic: every reading advances it by one second, so
    cost accounting (training and validation seconds) is checked without measuring anything."""
    from studylib import train

    ticks = iter(range(10**6))
    monkeypatch.setattr(train, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: float(next(ticks)))}))

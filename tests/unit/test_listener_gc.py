"""collector_paused: the cyclic GC is off inside any listener's step and back on after
the last one leaves; a collector someone else disabled stays disabled."""

from __future__ import annotations

import gc

import pytest

from watcher.services.listener import collector_paused


def test_paused_inside_and_nested_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # a second network's listener
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_restored_when_the_step_fails() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("step failed")
    assert gc.isenabled()


def test_a_collector_disabled_elsewhere_is_left_alone() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()

"""The crash-point switch: parsed strictly, armed only with the test opt-in on local
devnet chains, and a no-op when unarmed (the exit itself is tested on real processes in
tests/integration/test_crash_points.py)."""

from __future__ import annotations

import pytest

from watcher import crashpoints
from watcher.crashpoints import CrashPointRefused, arm, crash_point, parse

LOCAL = {31337, 1337}


def test_parse_names_and_counts() -> None:
    assert parse("sender.persist.after_commit") == {"sender.persist.after_commit": 1}
    assert parse(" tracker.settle.before_commit:3 , intake.batch.after_commit") == {
        "tracker.settle.before_commit": 3,
        "intake.batch.after_commit": 1,
    }
    with pytest.raises(CrashPointRefused, match=r"unknown crash point 'sender\.typo'"):
        parse("sender.typo")
    for bad in (
        "sender.persist.after_commit:0",
        "sender.persist.after_commit:x",
        "sender.persist.after_commit:٣",
    ):
        with pytest.raises(CrashPointRefused, match="positive integer"):
            parse(bad)


def test_arm_refuses_without_opt_in_or_off_devnet() -> None:
    env = {crashpoints.ENV: "sender.persist.after_commit"}
    with pytest.raises(CrashPointRefused, match="test-only switch"):
        arm(env, [31337], LOCAL)
    env[crashpoints.OPT_IN] = "yes"  # only the exact value counts
    with pytest.raises(CrashPointRefused, match="test-only switch"):
        arm(env, [31337], LOCAL)
    env[crashpoints.OPT_IN] = crashpoints.OPT_IN_VALUE
    with pytest.raises(CrashPointRefused, match=r"non-devnet chains \[1\]"):
        arm(env, [31337, 1], LOCAL)
    assert crashpoints._armed is None


def test_unarmed_and_other_points_do_nothing() -> None:
    arm({}, [1], LOCAL)  # nothing set: production, nothing armed, nothing checked
    crash_point("sender.persist.after_commit")
    env = {crashpoints.ENV: "tracker.settle.after_commit:2", crashpoints.OPT_IN: "test"}
    try:
        arm(env, [31337], LOCAL)
        crash_point("sender.persist.after_commit")  # not armed for this one
        crash_point("tracker.settle.after_commit")  # first of two: counts down only
        assert crashpoints._armed == {"tracker.settle.after_commit": 1}
    finally:
        crashpoints.disarm()

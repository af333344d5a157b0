"""The sender's quorum decision over co-signers' answers (services/cosigning.decide):
the vault's exact rule, each validator once, refusals final or not."""

from __future__ import annotations

import pytest

from watcher.services.cosign_client import CoSignature, CoSignRefused, CoSignUnavailable
from watcher.services.cosigning import Quorum, Short, decide, quorum_met

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
C = "0x" + "cc" * 20
D = "0x" + "dd" * 20
STRANGER = "0x" + "ee" * 20
EQUAL = {A: 1, B: 1, C: 1}


def sig(url: str, signer: str) -> CoSignature:
    return CoSignature(url, signer, "0x" + signer[2:4] * 65)


def refused(url: str, code: str = "USER_SIGNATURE_INVALID") -> CoSignRefused:
    return CoSignRefused(url, 403, code, "no")


def down(url: str) -> CoSignUnavailable:
    return CoSignUnavailable(url, "ClientConnectorError")


@pytest.mark.parametrize(
    ("signed", "total", "met"),
    [
        (2, 3, True),
        (1, 3, False),
        (2, 4, False),
        (3, 4, True),
        (4, 6, True),
        (3, 5, False),
        (0, 0, False),
        (10, 15, True),
        (9, 14, False),
    ],
)
def test_the_vaults_rule_exactly(signed: int, total: int, met: bool) -> None:
    assert quorum_met(signed, total) is met


def test_two_of_three_is_a_quorum_sorted_by_signer() -> None:
    out = decide([sig("u1", C), sig("u2", A), down("u3")], EQUAL, 123)
    assert isinstance(out, Quorum)
    assert [s.lower() for s, _ in out.signatures] == [A, C]
    assert out.deadline == 123 and out.refusals == []


def test_one_validator_counts_once_whichever_url_served_it() -> None:
    out = decide([sig("u1", A), sig("u2", A), down("u3")], EQUAL, 1)
    assert isinstance(out, Short) and not out.refused
    assert out.reason.startswith("cosign_quorum: 1 of 3 validator power signed")
    assert out.signed == 1


def test_a_signer_outside_the_validator_set_does_not_count() -> None:
    out = decide([sig("u1", A), sig("u2", STRANGER), sig("u3", B)], EQUAL, 1)
    assert isinstance(out, Quorum)
    assert len(out.signatures) == 2
    out = decide([sig("u1", A), sig("u2", STRANGER), down("u3")], EQUAL, 1)
    assert isinstance(out, Short) and "not a validator" in out.reason


def test_half_of_four_is_not_enough_and_weights_count() -> None:
    four = {A: 1, B: 1, C: 1, D: 1}
    assert isinstance(decide([sig("1", A), sig("2", B), down("3"), down("4")], four, 1), Short)
    weighted = {A: 2, B: 1}
    assert isinstance(decide([sig("1", A), down("2")], weighted, 1), Quorum)
    assert isinstance(decide([down("1"), sig("2", B)], weighted, 1), Short)


def test_refusals_final_only_when_nobody_left_could_sign() -> None:
    # Every co-signer that did not sign refused for good: final.
    out = decide([refused("u1"), refused("u2"), sig("u3", A)], EQUAL, 1)
    assert isinstance(out, Short) and out.refused
    assert out.reason.startswith("cosign_refused")
    assert len(out.refusals) == 2
    # One is only unavailable: it may still sign later, so the withdrawal waits.
    out = decide([refused("u1"), down("u2"), sig("u3", A)], EQUAL, 1)
    assert isinstance(out, Short) and not out.refused
    # A limit refusal is not final: the window will have room again.
    out = decide([refused("u1", "GLOBAL_LIMIT_EXCEEDED"), refused("u2"), down("u3")], EQUAL, 1)
    assert isinstance(out, Short) and not out.refused


def test_a_refusal_beside_a_quorum_is_still_reported() -> None:
    out = decide([refused("u1"), sig("u2", A), sig("u3", B)], EQUAL, 1)
    assert isinstance(out, Quorum)
    assert [r.url for r in out.refusals] == ["u1"]


def test_no_validators_is_never_a_quorum() -> None:
    out = decide([sig("u1", A)], {}, 1)
    assert isinstance(out, Short)

"""The report helpers the core shares with the evaluators (issue 31: one helper each, with the
report's own words and buckets as parameters)."""

from __future__ import annotations

from music_core.audit.stats import rate as audit_rate
from music_core.audit.stats import turn_bucket as audit_turn_bucket
from music_core.scoring import rm_vote
from music_core.stats import rate, turn_bucket, turn_buckets


def test_one_rate_in_each_reports_words():
    assert audit_rate(3, 4) == {"k": 3, "n": 4, "rate": 0.75, "ci95": rate(3, 4)["ci95"]}
    assert list(rate(2, 3, names=("agree", "total"))) == ["agree", "total", "rate", "ci95"]
    assert rate(1, 3, names=("agree", "total"), key="ratio", interval=False) == {"agree": 1, "total": 3, "ratio": 0.3333}
    assert rate(0, 0) == {"k": 0, "n": 0, "rate": None, "ci95": None}


def test_turn_buckets_from_their_starts():
    assert turn_buckets() == ("1", "2", "3-4", "5+")
    assert [turn_bucket(n) for n in (0, 1, 2, 3, 4, 5, 9)] == ["1", "1", "2", "3-4", "3-4", "5+", "5+"]
    assert [audit_turn_bucket(n) for n in (1, 2, 3, 4, 5, 9)] == ["1", "2", "3", "4", "5+", "5+"]


def test_an_rm_vote_in_each_reports_words():
    assert [rm_vote(d) for d in (0.2, -0.2, 0.0)] == ["chosen", "rejected", "tie"]
    assert [rm_vote(d, 0.1, sides=("model_a", "model_b")) for d in (0.2, -0.2, 0.05)] == ["model_a", "model_b", "tie"]

"""The reports' formatting (nmusic/evaluation/report.py); the reports themselves are checked in test_evaluate.py."""
from nmusic.evaluation.report import fmt_seconds


def test_fmt_seconds():
    assert fmt_seconds(0.46) == "0.5 s" and fmt_seconds(42) == "42 s"
    assert fmt_seconds(600) == "10.0 min" and fmt_seconds(3000) == "50.0 min"
    assert fmt_seconds(1.3 * 3600) == "1.3 h" and fmt_seconds(None) == "-"

"""The error that marks failed work: short where people read it, whole where code reads it."""

from __future__ import annotations

from tasks.base import WorkFailed


def test_work_failed_reads_as_one_sentence_and_keeps_the_summary() -> None:
    """Flower and logs get the count and the first messages; `summary` keeps every item."""
    errors = [
        {"field": "closed_period_ids", "code": "generation_failed", "message": f"period {i}"}
        for i in range(5)
    ]
    summary = {
        "status": "some_failed",
        "errors": errors,
        "invoices": [{"n": i} for i in range(500)],
    }

    failed = WorkFailed(summary)

    assert str(failed) == "5 item(s) failed: period 0; period 1; period 2 (and 2 more)"
    assert repr(failed) == f"WorkFailed({str(failed)!r})"
    assert failed.summary is summary
    assert WorkFailed(*failed.args).summary == summary  # how a result backend rebuilds it

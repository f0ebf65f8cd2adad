"""`billing.ping`: a task that does nothing but travel through the broker and a worker.

Used to check that a worker is consuming, and by the benchmarks as the no-op baseline.
"""

from __future__ import annotations

from typing import Any

from worker.celery_app import app


@app.task(name="billing.ping")
def ping(payload: Any = None) -> dict[str, Any]:
    return {"status": "pong", "payload": payload}

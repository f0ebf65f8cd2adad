"""The billing worker: Celery app, settings, database session scope and the `billing` CLI.

`celery -A worker worker` and `celery -A worker beat` find the app here.
"""

import sys
from pathlib import Path

from worker.celery_app import app
from worker.config import SettingsError, settings


def _started_by_celery() -> bool:
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return argv0.name == "celery" or argv0.parent.name == "celery"


if _started_by_celery():
    # The worker, beat or Flower: a bad setting (e.g. BILLING_SMTP_URL) stops it at
    # start-up with one line naming the variable, not Celery's 75-line traceback.
    try:
        settings()
    except SettingsError as bad:
        print(f"billing: {bad}", file=sys.stderr)
        raise SystemExit(1) from None

__all__ = ["app"]

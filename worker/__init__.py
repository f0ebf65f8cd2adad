"""The billing worker: Celery app, settings, database session scope and the `billing` CLI.

`celery -A worker worker` and `celery -A worker beat` find the app here.
"""

from worker.celery_app import app

__all__ = ["app"]

"""The billing worker: Celery app, settings, database session scope and the `billing` CLI."""

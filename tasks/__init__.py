"""One service function per verb, each with a thin Celery task at the bottom of its module.

Services take a `Session` and explicit inputs (including the instant they act at); they
never open a session and never read the clock. Tasks parse JSON-safe arguments, open the
session scope, call one service and return a JSON-safe summary.
"""

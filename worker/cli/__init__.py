"""The `billing` command line.

Each module of this package contributes its commands by listing them in `COMMANDS`, so
adding a verb never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import click

from worker.reachability import explain


class _Billing(click.Group):
    """The command group: a dead service or a bad setting ends any command with one or two
    lines saying what could not be used and what to check (exit status 1), never a
    traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            message = explain(error)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=_Billing, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="billing-worker")
def main() -> None:
    """Billing worker: take in customers, close their billing periods in their own
    timezones, and invoice them.

    Configuration comes from the environment: BILLING_DATABASE_URL, BILLING_BROKER_URL,
    BILLING_RESULT_BACKEND (all optional: with nothing set, an embedded SQLite database and
    file-system broker under BILLING_DATA_DIR, default ./.billing-data, are used).
    """


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register()

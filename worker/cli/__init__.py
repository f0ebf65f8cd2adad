"""The `billing` command line.

Each module of this package contributes its commands by listing them in `COMMANDS`, so
adding a verb never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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

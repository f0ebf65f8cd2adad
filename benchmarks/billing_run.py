"""How fast `billing run` gets a new user going on the embedded default.

Starts `billing run` with nothing configured on a fresh data folder and prints, from the
moment the command is started: the banner, the worker ready, the first `billing.ping`
answered; then the round trip of a burst of pings through the file-system broker and the
SQLite result backend (two pool processes). If the intake and closing tasks exist, it also
loads examples/catalog.yaml, enqueues examples/customers.jsonl and reports the time to the
first closed period and the first invoice.

    python benchmarks/billing_run.py [--pings 200] [--close-interval 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BILLING = str(Path(sys.executable).with_name("billing"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument(
        "--close-interval",
        type=int,
        default=None,
        help="passed to billing run (default: its own, 300 s)",
    )
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="billing-run-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env["BILLING_DATA_DIR"] = str(data_dir)
    # This process talks to the same embedded default as the run it starts.
    os.environ.clear()
    os.environ.update(env)
    log_path = data_dir / "run.log"

    close_interval = ["--close-interval", str(args.close_interval)] if args.close_interval else []
    started = time.monotonic()
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [BILLING, "run", *close_interval],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        banner = wait(lambda: "stop        :" in log_path.read_text(), started)
        ready = wait(lambda: " ready." in log_path.read_text(), started)

        from tasks.health import ping

        ping.delay("first").get(timeout=60)
        first_ping = time.monotonic() - started

        print(f"billing run {' '.join(close_interval)}: embedded default, fresh data folder")
        print(f"  banner printed (migrated)      {banner:6.2f} s after the command")
        print(f"  worker ready                   {ready:6.2f} s")
        print(f"  first billing.ping answered    {first_ping:6.2f} s")
        if args.pings:
            burst_start = time.monotonic()
            results = [ping.delay(n) for n in range(args.pings)]
            for result in results:
                result.get(timeout=120)
            burst = time.monotonic() - burst_start
            print(
                f"  {args.pings} pings round trip         {burst:6.2f} s "
                f"({args.pings / burst:.0f} tasks/s, file-system broker + SQLite results)"
            )
        walk_through(started, env)
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(timeout=120)
        print(f"  Ctrl-C: billing run exited with code {code}")
        shutil.rmtree(data_dir, ignore_errors=True)


def walk_through(started: float, env: dict[str, str]) -> None:
    """The README's walk-through, timed, when the intake and closing tasks exist."""
    catalog = ROOT / "examples" / "catalog.yaml"
    customers = ROOT / "examples" / "customers.jsonl"
    try:
        import tasks.closing as closing
        import tasks.intake as intake
    except ImportError:
        return
    if not (catalog.exists() and customers.exists()):
        print("  (no examples/ yet: walk-through not timed)")
        return
    if not (hasattr(closing, "close_due") and hasattr(intake, "create_customer")):
        print("  (intake or closing not built yet: walk-through not timed)")
        return
    from sqlalchemy import func, select

    from models import ClosedPeriod, Invoice
    from worker.db import unit_of_work

    for command in (
        ["catalog", "load", str(catalog)],
        ["customers", "enqueue", str(customers), "--wait"],
    ):
        # Exit status 1 is expected: the example file holds rejected and malformed lines.
        subprocess.run([BILLING, *command], cwd=ROOT, env=env, check=False, capture_output=True)
    enqueued = time.monotonic() - started

    def count(model: type) -> int:
        with unit_of_work() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    closed = wait(lambda: count(ClosedPeriod) > 0, started, timeout=600)
    print(f"  examples loaded, customers in  {enqueued:6.2f} s")
    print(f"  first closed period            {closed:6.2f} s")
    invoiced = wait(lambda: count(Invoice) > 0, started, timeout=600)
    print(f"  first invoice                  {invoiced:6.2f} s")


def wait(predicate, started: float, *, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return time.monotonic() - started


if __name__ == "__main__":
    main()

"""What every `billing` command shares: reading input files, sending one job per line and
collecting the outcomes, checking output paths, and how a command fails.

Input files are JSON Lines (one JSON object per line) or CSV (header row = keys,
`custom_data.<field>` columns nest, an empty cell = key absent); `-` reads standard input.
Each physical line is read on its own, so one bad line (not UTF-8, not JSON, an unbalanced
quote) is reported as `line N: …` and never affects the others. A multi-line quoted CSV
cell is therefore not supported: no payload field takes a line break.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import click
from tqdm import tqdm

from models.movements import MAX_ROW_ID
from models.validation import Problem, iso_utc
from worker.reachability import (
    bound_producer_retries,
    check_broker,
    check_result_backend,
    connection_lost,
)

__all__ = [
    "Line",
    "Outcome",
    "fail",
    "iso_utc",
    "open_output",
    "read_lines",
    "send_and_collect",
]


class _Seconds(click.FloatRange):
    """A positive, finite number of seconds (`nan` and `inf` are refused too)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


# Types for every numeric option, so a wrong number is a usage error (exit 2) on every
# database alike: counts and row ids are 1 .. the largest 64-bit id.
SECONDS = _Seconds(min=0, min_open=True)
LIMIT = click.IntRange(1, MAX_ROW_ID)
ROW_ID = click.IntRange(1, MAX_ROW_ID)

# With --wait and no result after this many seconds, ask whether any worker consumes the
# queue at all (a worker that is merely busy keeps the command waiting).
IDLE_CHECK_AFTER = 5.0


def fail(message: str) -> NoReturn:
    """End the command with `Error: message` on stderr and exit status 1."""
    raise click.ClickException(message)


def exit_status(failed: bool) -> None:
    """End the command with status 1 if `failed` (the reasons were printed already)."""
    if failed:
        raise click.exceptions.Exit(1)


def describe(problem: dict[str, Any]) -> str:
    """`field: message`, without repeating a field the message already names."""
    where, message = problem.get("field"), str(problem.get("message"))
    return message if not where or message.startswith(str(where)) else f"{where}: {message}"


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class Line:
    """One input record: its line number, and either a payload or why it is malformed."""

    number: int
    payload: dict[str, Any] | None = None
    problem: Problem | None = None

    @property
    def error(self) -> str | None:
        return None if self.problem is None else self.problem.message


class InputError(click.ClickException):
    """The whole input is unusable (empty, the wrong format): said once, nothing sent."""


def _malformed(number: int, code: str, message: str) -> Line:
    return Line(number, problem=Problem(None, code, message))


def _decoded(number: int, raw: bytes) -> str | Line:
    if number == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark some editors write
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as bad:
        return _malformed(
            number,
            "not_utf8",
            f"not UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1}); "
            "save the file as UTF-8",
        )


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _looks_like_csv_header(text: str) -> bool:
    return not text.lstrip().startswith(("{", "[", '"')) and ("," in text or ";" in text)


def _jsonl(lines: Iterable[tuple[int, str | Line]], *, guessed: bool) -> Iterator[Line]:
    first = True
    for number, text in lines:
        if isinstance(text, Line):
            yield text
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text, object_pairs_hook=_refuse_duplicates)
        except _DuplicateKey as key:
            yield _malformed(number, "duplicate_key", f"the key {str(key)!r} appears twice")
            continue
        except ValueError as error:  # JSONDecodeError, or an integer too long to read
            if first and guessed and _looks_like_csv_header(text):
                raise InputError(
                    f"line {number} looks like a CSV header ({text[:60]!r}), not JSON: "
                    "give --format csv (or name the file *.csv)"
                ) from None
            where = (
                f"{error.msg} at column {error.colno}"
                if isinstance(error, json.JSONDecodeError)
                else str(error)
            )
            yield _malformed(number, "invalid_json", f"not valid JSON ({where})")
            continue
        finally:
            first = False
        if not isinstance(value, dict):
            yield _malformed(
                number, "not_an_object", f"not a JSON object (got {type(value).__name__})"
            )
            continue
        yield Line(number, payload=value)


def _cells(text: str) -> list[str]:
    return next(csv.reader([text], strict=True))


def _csv(lines: Iterable[tuple[int, str | Line]]) -> Iterator[Line]:
    columns: list[str] | None = None
    for number, text in lines:
        if isinstance(text, Line):
            if columns is None:
                raise InputError(f"line {number} (the CSV header): {text.error}")
            yield text
            continue
        if not text.strip():
            continue
        if text.count('"') % 2:
            yield _malformed(
                number,
                "unterminated_quote",
                'a quoted cell starts here but its closing " is missing (cells cannot span lines)',
            )
            continue
        try:
            cells = _cells(text)
        except csv.Error as error:
            yield _malformed(number, "invalid_csv", f"not valid CSV: {error}")
            continue
        if columns is None:
            columns = [cell.strip() for cell in cells]
            if len(columns) == 1 and (";" in text or "\t" in text):
                separator = "semicolons" if ";" in text else "tabs"
                raise InputError(
                    f"line {number}: the header is one column separated by {separator}, "
                    "not commas; save the file as comma-separated CSV"
                )
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            yield _malformed(
                number, "too_many_cells", f"{len(cells)} cells but only {len(columns)} columns"
            )
            continue
        payload: dict[str, Any] = {}
        for column, cell in zip(columns, cells, strict=False):
            if cell == "":
                continue
            if column.startswith("custom_data."):
                payload.setdefault("custom_data", {})[column.removeprefix("custom_data.")] = cell
            else:
                payload[column] = cell
        yield Line(number, payload=payload)
    if columns is None:
        raise InputError("the file is empty: nothing to send")


def read_lines(stream: IO[bytes], fmt: str, *, guessed: bool = False) -> Iterator[Line]:
    """Every record of `stream` (bytes), JSON Lines or CSV, numbered from 1.

    `guessed` says the format was not given: a JSON reader then stops at a first line that
    is a CSV header, with a hint. An empty input, a header-only CSV or a wrongly separated
    one raise InputError (after the lines read so far, i.e. before anything is sent for an
    empty one).
    """
    lines = ((n, _decoded(n, raw)) for n, raw in enumerate(stream, start=1))
    records = _csv(lines) if fmt == "csv" else _jsonl(lines, guessed=guessed)
    seen = False
    for line in records:
        seen = True
        yield line
    if not seen:
        what = "has a header row but no data lines" if fmt == "csv" else "has no lines"
        raise InputError(f"the file {what}: nothing to send")


def format_of(path: str, given: str) -> tuple[str, bool]:
    """(format, whether it was guessed): `auto` means CSV for *.csv, JSON Lines otherwise."""
    if given != "auto":
        return given, False
    return ("csv" if path.lower().endswith(".csv") else "jsonl"), True


def open_input(path: str) -> IO[bytes]:
    """The bytes of `path`, or of standard input for `-`."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")


def count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def open_output(path: Path | None) -> IO[str] | None:
    """Open an output file now, before any work, so a wrong path costs nothing."""
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path.resolve()}: {error.strerror}")


def check_output_paths(*paths: Path | None) -> None:
    """Fail now, before any work, if one of `paths` could not be written."""
    for path in paths:
        if path is None:
            continue
        folder = path.resolve().parent
        if not folder.is_dir():
            fail(f"cannot write {path.resolve()}: the folder {folder} does not exist")
        if path.is_dir() or not os.access(path if path.exists() else folder, os.W_OK):
            fail(f"cannot write {path.resolve()}: permission denied")


# --------------------------------------------------------------------------------------------
# Sending and collecting


@dataclass
class Outcome:
    """What became of one input line: a task result, or why there is none."""

    line: int
    status: str  # a result's status, or malformed / failed / timeout / queued / unknown / not_sent
    result: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, **self.result, "status": self.status}


@dataclass
class Report:
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    sent: int = 0
    malformed: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self, kind: Callable[[Outcome], str]) -> Counter[str]:
        return Counter(kind(o) for o in self.outcomes.values())


def send_or_note(app: Any, task_name: str, body: Any, report: Report, line: int) -> Any:
    """Send one `task_name` job with `body` (its line, or first line, is `line`); its
    AsyncResult, or None with a note when the broker is lost."""
    try:
        return app.send_task(task_name, args=[body])
    except Exception as error:
        reason = connection_lost(error)
        if reason is None:
            raise
        report.notes.append(
            f"the broker was lost at line {line} ({reason}): that line and "
            "the ones after it were not sent"
        )
        return None


def record_malformed(report: Report, line: Line, bar: Any) -> None:
    """A line that cannot be sent: its outcome, and `line N: why` above the progress bar."""
    assert line.problem is not None
    report.malformed += 1
    bar.write(f"line {line.number}: {line.problem.message}", file=sys.stderr)
    report.outcomes[line.number] = Outcome(
        line.number, "malformed", {"errors": [line.problem.as_json()]}
    )


def _consumers(app: Any, queue: str) -> int:
    """How many workers answered that they consume `queue` (0: none, or none answered)."""
    try:
        replies = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception:
        return 0
    return sum(1 for queues in replies.values() if any(q.get("name") == queue for q in queues))


def prepare_producer(app: Any, *, wait: bool) -> None:
    """Before a command sends anything: give up on a dead broker (and, with `wait`, a dead
    result backend) within a few seconds, with one line saying which."""
    bound_producer_retries(app)
    check_broker(app)
    if wait:
        check_result_backend(app)


def send_and_collect(
    app: Any,
    task_name: str,
    lines: Iterable[Line],
    *,
    queue: str,
    wait: bool,
    timeout: float,
    progress: bool,
    total: int | None,
) -> Report:
    """Send one `task_name` job per well-formed line and, with `wait`, collect every outcome
    within one deadline of `timeout` seconds.

    Never raises for a dead service once sending has begun: a broker lost while sending, a
    result backend lost while waiting or no worker consuming `queue` ends the command with
    a note saying what is known and which lines to send again.
    """
    prepare_producer(app, wait=wait)
    report = Report()
    pending: list[tuple[int, Any]] = []
    with tqdm(total=total, unit="line", desc="send", disable=not progress, file=sys.stderr) as bar:
        for line in lines:
            bar.update(line.number - bar.n)
            if line.payload is None:
                record_malformed(report, line, bar)
                continue
            if report.notes:  # the broker is gone: what remains is not sent
                report.outcomes[line.number] = Outcome(line.number, "not_sent")
                continue
            result = send_or_note(app, task_name, line.payload, report, line.number)
            if result is None:
                report.outcomes[line.number] = Outcome(line.number, "not_sent")
            else:
                pending.append((line.number, result))
    report.sent = len(pending)
    _finish(
        app, pending, report, report, queue=queue, wait=wait, timeout=timeout, progress=progress
    )
    return report


def _finish(
    app: Any,
    pending: list[tuple[int, Any]],
    sending: Report,
    collecting: Report,
    *,
    queue: str,
    wait: bool,
    timeout: float,
    progress: bool,
) -> None:
    """With `wait`, collect the `pending` results into `collecting` (all `unknown` if the
    broker was lost while `sending`)."""
    if wait and pending and not sending.notes:
        _collect(app, pending, collecting, queue=queue, timeout=timeout, progress=progress)
    elif wait:
        for number, result in pending:
            collecting.outcomes[number] = Outcome(number, "unknown", {"task_id": result.id})
    if sending.notes:
        # The backend is gone: a result must not try to unsubscribe from it when it is
        # garbage-collected (Celery would print a traceback for each one).
        for _number, result in pending:
            result.backend = None


def _collect(
    app: Any,
    pending: list[tuple[int, Any]],
    report: Report,
    *,
    queue: str,
    timeout: float,
    progress: bool,
) -> None:
    start = time.monotonic()
    deadline = start + timeout
    received = 0
    with tqdm(
        total=len(pending), unit="job", desc="results", disable=not progress, file=sys.stderr
    ) as bar:
        for index, (number, result) in enumerate(pending):
            while True:
                now = time.monotonic()
                step = min(max(0.1, deadline - now), 1.0)
                try:
                    value = result.get(timeout=step, propagate=False)
                    break
                except Exception as error:
                    if not _is_timeout(error):
                        reason = connection_lost(error)
                        if reason is None:
                            raise
                        _give_up(
                            pending[index:],
                            report,
                            "unknown",
                            f"the result backend was lost after {received} of {len(pending)} "
                            f"result(s) ({reason}); the lines marked unknown may or may not "
                            "have run: send them again (a repeated idempotency key or name "
                            "records nothing twice)",
                        )
                        return
                if time.monotonic() >= deadline:
                    _give_up(
                        pending[index:],
                        report,
                        "timeout",
                        f"no result within {timeout:g} s for {len(pending) - index} job(s)",
                    )
                    return
                if received == 0 and time.monotonic() - start >= IDLE_CHECK_AFTER:
                    if not _consumers(app, queue):
                        _give_up(
                            pending[index:],
                            report,
                            "queued",
                            f"nothing is consuming the {queue!r} queue (no worker answered): "
                            f"the {len(pending) - index} job(s) stay queued and run when a "
                            "worker starts (`billing run`); stopped waiting",
                        )
                        return
                    start = float("inf")  # a worker is there: just wait for it
            received += 1
            if result.successful() and isinstance(value, dict):
                status = str(value.get("status"))
                report.outcomes[number] = Outcome(number, status, {**value, "task_id": result.id})
            else:
                report.outcomes[number] = Outcome(
                    number, "failed", {"task_id": result.id, "error": repr(value)}
                )
            bar.update(1)


def _is_timeout(error: BaseException) -> bool:
    from celery.exceptions import TimeoutError as ResultTimeout

    return isinstance(error, ResultTimeout)


def _give_up(rest: list[tuple[int, Any]], report: Report, status: str, note: str) -> None:
    for number, result in rest:
        report.outcomes[number] = Outcome(number, status, {"task_id": result.id})
    report.notes.append(note)


def lines_to_resend(report: Report, statuses: Iterable[str]) -> str:
    """`3, 7-9, 12` for the lines whose outcome is one of `statuses`."""
    wanted = set(statuses)
    numbers = sorted(n for n, o in report.outcomes.items() if o.status in wanted)
    ranges: list[str] = []
    for number in numbers:
        if ranges and "-" not in ranges[-1] and int(ranges[-1]) == number - 1:
            ranges[-1] = f"{ranges[-1]}-{number}"
        elif ranges and "-" in ranges[-1] and int(ranges[-1].split("-")[1]) == number - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{number}"
        else:
            ranges.append(str(number))
    return ", ".join(ranges)


# --------------------------------------------------------------------------------------------
# Sending batches


Batch = list[tuple[int, dict[str, Any]]]  # (line number, payload) of well-formed lines


def send_and_collect_batches(
    app: Any,
    task_name: str,
    runs: Iterable[list[Batch]],
    *,
    queue: str,
    wait: bool,
    timeout: float,
) -> Report:
    """Send one `task_name` job per batch (`[{"line": N, "payload": …}]`) and, with `wait`,
    collect every line's outcome as `send_and_collect` does for one job per line.

    Each run is a list of batches that must apply one after the other: a run of more than
    one batch is sent as a Celery chain, so its batches never run concurrently. The task
    answers `{"results": [{"line": N, "status": …, …}]}`; a batch without an answer (timeout,
    failure, lost service) gives each of its lines that outcome. `report.sent` counts lines.
    """
    from celery import chain, uuid

    prepare_producer(app, wait=wait)
    report = Report()
    pending: list[tuple[int, Any]] = []
    batches: list[Batch] = []
    for run in runs:
        if report.notes:  # the broker is gone: what remains is not sent
            for batch in run:
                for number, _payload in batch:
                    report.outcomes[number] = Outcome(number, "not_sent")
            continue
        ids = [uuid() for _ in run]
        signatures = [
            app.signature(
                task_name, args=[[{"line": n, "payload": p} for n, p in batch]], immutable=True
            ).set(task_id=task_id)
            for batch, task_id in zip(run, ids, strict=True)
        ]
        try:
            (chain(*signatures) if len(signatures) > 1 else signatures[0]).apply_async()
        except Exception as error:
            reason = connection_lost(error)
            if reason is None:
                raise
            first = run[0][0][0]
            report.notes.append(
                f"the broker was lost at line {first} ({reason}): the lines of that batch and "
                "the ones after it were not sent"
            )
            for batch in run:
                for number, _payload in batch:
                    report.outcomes[number] = Outcome(number, "not_sent")
            continue
        for batch, task_id in zip(run, ids, strict=True):
            pending.append((len(batches), app.AsyncResult(task_id)))
            batches.append(batch)
            report.sent += len(batch)
    by_batch = Report()
    _finish(app, pending, report, by_batch, queue=queue, wait=wait, timeout=timeout, progress=False)
    report.notes.extend(by_batch.notes)
    for index, outcome in by_batch.outcomes.items():
        answers = outcome.result.get("results")
        if isinstance(answers, list):
            for answer in answers:
                number = int(answer["line"])
                status = str(answer.get("status"))
                report.outcomes[number] = Outcome(
                    number, status, {**answer, "task_id": outcome.result["task_id"]}
                )
            continue
        for number, _payload in batches[index]:
            report.outcomes[number] = Outcome(number, outcome.status, dict(outcome.result))
    return report

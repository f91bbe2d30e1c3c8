"""What a person reads while a run trains: one line per event, each printed once.

Ray Train 2.60 replaces `print` inside its workers (RAY_TRAIN_ENABLE_PRINT_PATCH) with a
function that sends the line to the root logger, whose handler writes it to the console, and,
because Ray has wrapped the worker's sys.stdout, prints it as well: every line a worker
printed reached the driver twice. `say` writes to the stream itself, which reaches the driver
(and a job's log) once, in a Ray worker or not.
"""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """`message` as one line on stdout, flushed (a job's log shows it at once)."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def duration(seconds: float) -> str:
    """A short span for a progress line: 45s, 3m05s, 2h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

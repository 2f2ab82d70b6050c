"""The local run log: every sample of a run, appended to ``llmops_runs/<run>/rank<R>.jsonl``.

Why JSON lines and not SQLite: a record is one ``write`` of one line to a file opened for
appending, so a process killed by an OOM or SIGKILL leaves every line it had flushed (the
kernel keeps the page cache; only a line torn mid-write is lost, and the reader skips it).
SQLite gives the same guarantee only per committed transaction, and a commit costs an fsync
or a WAL checkpoint; JSON lines need no schema or migrations, one file per rank means DDP
ranks never share a lock, and ``tail -f``, ``jq`` or pandas read the log as it grows.

The training thread only appends to an in-memory deque (``RunLogWriter.step``); a background
thread snapshots the monitor's ``MetricState`` every ``interval`` seconds, writes what changed,
and flushes. ``read_run`` reads a run directory back, ranks and all, torn last line included.
"""

from llmops.runlog.reader import RankLog, RunLog, read_run
from llmops.runlog.writer import RunLogWriter, run_path

__all__ = ["RankLog", "RunLog", "RunLogWriter", "read_run", "run_path"]

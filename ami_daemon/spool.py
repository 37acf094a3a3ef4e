"""A durable on-disk spool of finished calls waiting for the CRM.

A call that ended is appended here (written to the kernel at once, so that a
SIGKILL of the daemon cannot lose it) and ``fsync``-ed to the disk before the
daemon tries to write it to PostgreSQL (:meth:`Spool.sync`, one fsync for
every call appended since the last, run by the writer off the event loop); it
is acknowledged only after the CRM transaction committed.  If the database is
down, the call simply stays; if the daemon is killed between the append and
the acknowledgement, the call is found again at the next start and written
then.  Acknowledgements are not fsync-ed: one lost in a power failure only
makes the next start offer the call again, which the CRM answers with
"already recorded".  The CRM write is idempotent
(one row per PBX and call id, enforced by a unique key), so a call written but
not yet acknowledged when the process died is not doubled by the retry.

On disk: ``calls.jsonl`` holds one JSON object per line ``{"key", "record"}``,
``acks.log`` one acknowledged key per line; when every entry is acknowledged
both files are truncated once they exceed :data:`COMPACT_BYTES`.  A torn last
line means the machine failed inside ``append``: that call had not been
handed on yet, so nothing was written for it; it is logged and skipped, and
the CDR backfill after the restart recovers the call from Asterisk's own records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CALLS_FILE = "calls.jsonl"
ACKS_FILE = "acks.log"
#: Truncate the files when every call is acknowledged and they are this large.
COMPACT_BYTES = 1024 * 1024


class SpoolError(Exception):
    """The spool folder cannot be used (permissions, disk full); names the path."""


class Spool:
    """Append-before-write, acknowledge-after-commit journal, oldest first."""

    def __init__(self, folder: Path, warn_bytes: int = 100 * 1024 * 1024) -> None:
        self.folder = folder
        self.warn_bytes = warn_bytes
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._warned = False
        self._dirty = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._load()
            self._calls = open(folder / CALLS_FILE, "ab")  # noqa: SIM115 - kept open
            self._acks = open(folder / ACKS_FILE, "ab")  # noqa: SIM115 - kept open
        except OSError as exc:
            raise SpoolError(f"spool folder {folder}: {exc.strerror or exc}") from None

    def _load(self) -> None:
        acked: set[str] = set()
        acks_path = self.folder / ACKS_FILE
        if acks_path.exists():
            for line in acks_path.read_bytes().split(b"\n"):
                if line.strip():
                    acked.add(line.decode("utf-8", "replace").strip())
        calls_path = self.folder / CALLS_FILE
        if calls_path.exists():
            data = calls_path.read_bytes()
            lines = data.split(b"\n")
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                    key, record = str(entry["key"]), entry["record"]
                except (ValueError, KeyError, TypeError):
                    torn = number == len(lines) and not data.endswith(b"\n")
                    what = "torn last line (write interrupted)" if torn else "unreadable line"
                    log.error("spool %s line %d: %s ignored", calls_path, number, what)
                    continue
                if key not in acked:
                    self._pending[key] = record
        if self._pending:
            log.warning(
                "spool %s: %d call(s) waiting for the CRM from a previous run",
                self.folder,
                len(self._pending),
            )

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def depth(self) -> int:
        return len(self._pending)

    def size_bytes(self) -> int:
        try:
            return (self.folder / CALLS_FILE).stat().st_size
        except OSError:
            return 0

    def append(self, key: str, record: Mapping[str, Any]) -> bool:
        """Store a finished call before it is handed on (written; :meth:`sync` fsyncs).

        A call already waiting under the same key is kept, not replaced (False
        is returned): the first version is the one seen on AMI, and the later
        one is the CDR's account of the same call, offered by a backfill that
        could not ask the CRM what it has (database down) — the CDR knows less
        (no transfers; after a blind transfer not even the DID, capture 04).
        """
        line = (
            json.dumps(
                {"key": key, "record": record}, ensure_ascii=False, separators=(",", ":")
            ).encode()
            + b"\n"
        )
        with self._lock:
            if key in self._pending:
                log.debug("spool %s: %s already waiting, first version kept", self.folder, key)
                return False
            try:
                self._calls.write(line)
                self._calls.flush()
                self._dirty = True
            except OSError as exc:
                raise SpoolError(
                    f"spool {self.folder}: cannot append: {exc.strerror or exc}"
                ) from None
            self._pending[key] = dict(record)
        size = self.size_bytes()
        if size > self.warn_bytes and not self._warned:
            self._warned = True
            log.error(
                "spool %s holds %d bytes (%d calls) — over spool.warn_bytes=%d; the CRM "
                "database is probably unreachable. Nothing is dropped.",
                self.folder,
                size,
                len(self._pending),
                self.warn_bytes,
            )
        return True

    def sync(self) -> None:
        """fsync every call appended so far (safe to run in a worker thread)."""
        if not self._dirty:
            return
        self._dirty = False
        try:
            os.fsync(self._calls.fileno())
        except (OSError, ValueError) as exc:
            self._dirty = True
            raise SpoolError(f"spool {self.folder}: cannot sync: {exc}") from None

    def ack(self, key: str) -> None:
        """The call is committed in the CRM: forget it."""
        with self._lock:
            if self._pending.pop(key, None) is None:
                return
            try:
                self._acks.write(key.encode() + b"\n")
                self._acks.flush()
            except OSError as exc:
                log.error(
                    "spool %s: cannot record acknowledgement of %s: %s (it will be "
                    "retried, harmlessly)",
                    self.folder,
                    key,
                    exc,
                )
            if not self._pending and self.size_bytes() > COMPACT_BYTES:
                self._compact()

    def _compact(self) -> None:
        try:
            self._calls.truncate(0)
            self._acks.truncate(0)
            os.fsync(self._calls.fileno())
            os.fsync(self._acks.fileno())
            self._warned = False
        except OSError as exc:
            log.warning("spool %s: compaction failed: %s", self.folder, exc)

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        """Every call not yet acknowledged, oldest first."""
        with self._lock:
            return list(self._pending.items())

    def close(self) -> None:
        with contextlib.suppress(SpoolError):
            self.sync()
        self._calls.close()
        self._acks.close()

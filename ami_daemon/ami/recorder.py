"""Writing a capture file: every byte Asterisk sends on the manager session.

A capture (DESIGN "contract: capture files") is the raw stream exactly as it
came off the socket — banner, Login answer, events, Ping answers — so that
``ami-daemon calls`` and the simulator read it like a live session.  The
recorder is a plain ``on_bytes`` hook of :class:`~ami_daemon.ami.connection.AmiConnection`
(``ami-daemon record``, and ``ami-daemon run --record FILE``).

The file is opened for appending: after a reconnect Asterisk sends a new
banner and Login answer, which the reader accepts in the middle of a stream.
Data is flushed to the operating system at most ``flush_interval`` seconds
after it arrived (a timer, so a quiet PBX does not leave its last events in
a buffer), and on :meth:`CaptureRecorder.close`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import BinaryIO

from ami_daemon.errors import UserError

log = logging.getLogger(__name__)


class CaptureRecorder:
    """Append raw AMI bytes to a file; use :meth:`write` as the connection's ``on_bytes``."""

    def __init__(self, path: str | Path, flush_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.bytes_written = 0
        self._handle: BinaryIO | None = None
        self._timer: asyncio.TimerHandle | None = None

    def open(self) -> CaptureRecorder:
        """Open the file for appending (UserError naming the file if that fails)."""
        try:
            self._handle = self.path.open("ab")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the capture: {exc.strerror}") from None
        return self

    def write(self, data: bytes) -> None:
        handle = self._handle
        if handle is None:
            return
        handle.write(data)
        self.bytes_written += len(data)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handle is not None:
            try:
                self._handle.flush()
            except OSError:
                log.exception("cannot flush the capture %s", self.path)

    def close(self) -> None:
        self.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> CaptureRecorder:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

"""systemd's notify protocol: readiness, watchdog and stopping, for ``Type=notify``.

systemd passes the path of a datagram socket in ``$NOTIFY_SOCKET`` (an
abstract socket when it starts with ``@``) and, with ``WatchdogSec=``, the
interval in ``$WATCHDOG_USEC``.  The daemon sends ``READY=1`` once AMI and the
database are up, ``WATCHDOG=1`` at half the interval while its event loop is
healthy, ``STATUS=...`` lines for ``systemctl status``, and ``STOPPING=1``
when it begins to shut down.  Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends notifications to systemd; silent when not run by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_seconds: float | None = int(usec) / 1_000_000 if usec.isdigit() else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines; False (and a debug log) if it could not."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode(), self._address)
            return True
        except OSError as exc:
            log.debug("systemd notify failed: %s", exc)
            return False

    def ready(self, status: str = "running") -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

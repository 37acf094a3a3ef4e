"""A private PostgreSQL for the demo and for tests on a machine without a server.

It uses ``pgserver`` (PyPI), which bundles PostgreSQL binaries in a wheel and
listens on a Unix socket only.  Run as root, pgserver creates a system user
``pgserver`` to own the data folder and makes every parent folder of it
world-readable; we therefore always put the data folder directly under the
system temporary folder (``/tmp``, already world-readable), never under a home
or project folder.
"""

from __future__ import annotations

import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

SYSTEM_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_listening(host: str = "127.0.0.1", port: int = 5432, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start(name: str = "ami-daemon-embedded", cleanup: str = "stop") -> tuple[str, Any]:
    """Start (or reuse) a private server; return its DSN and a handle to stop it.

    The handle's ``cleanup()`` stops the server (``cleanup="delete"``: and
    removes its data folder).  Raises ImportError with an
    install hint when pgserver is missing.
    """
    # platformdirs (used by pgserver) warns when XDG_RUNTIME_DIR is unset, as in
    # root shells and CI: harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "no PostgreSQL server given and pgserver (the embedded one) is not installed: "
                "pip install 'ami-daemon[embedded]', or name a server (ami-daemon demo --dsn "
                "DSN; tests: AMI_DAEMON_TEST_DSN)"
            ) from exc
        datadir = Path(tempfile.gettempdir()) / name
        server = pgserver.get_server(datadir, cleanup_mode=cleanup)  # type: ignore[attr-defined]
        uri = str(server.get_uri())
    return uri, server

"""Where the config file is found (DESIGN "contract: config file").

Kept free of heavy imports (no PyYAML, no phonenumbers): the classic AGI
script, which Asterisk starts once per call, needs only this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_LOCATIONS = (Path("/etc/ami-daemon/config.yaml"), Path("config.yaml"))
ENV_CONFIG = "AMI_DAEMON_CONFIG"


def find_config_file(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Path | None:
    """``--config FILE``, else ``$AMI_DAEMON_CONFIG``, else the first default that exists."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    for candidate in DEFAULT_LOCATIONS:
        if candidate.is_file():
            return candidate
    return None

"""``ami-daemon agi-server``: the ``crm_lookup`` FastAGI server alone, without the AMI side.

For sites that want the lookup before (or without) the call tracking, or a
second lookup server.  Asterisk calls it as ``AGI(agi://HOST:4573/crm_lookup)``.
The rules folder is re-read when its files change; SIGTERM or SIGINT stop it
cleanly (open sessions get two seconds to finish).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from ami_daemon import config
from ami_daemon.agi.crm_server import CrmLookupServer
from ami_daemon.errors import UserError

HELP = "serve the crm_lookup FastAGI script (agi://HOST:4573/crm_lookup)"

log = logging.getLogger("ami_daemon.agi")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: see README)")
    parser.add_argument("--bind", help="address to listen on (default: agi.bind, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: agi.port, 4573; 0 = any)")


async def _serve(cfg: config.Config, bind: str | None, port: int | None) -> int:
    server = CrmLookupServer(cfg, bind=bind, port=port)
    try:
        await server.start()
    except OSError as exc:
        await server.close()
        where = f"{bind or cfg.agi.bind}:{cfg.agi.port if port is None else port}"
        raise UserError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.close()
    log.info("FastAGI server stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    cfg.require_dsn()
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UserError(f"--port: not a TCP port: {args.port}")
    return asyncio.run(_serve(cfg, args.bind, args.port))

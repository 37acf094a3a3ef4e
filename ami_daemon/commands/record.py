"""``ami-daemon record --out FILE``: record the raw AMI stream of a PBX.

Logs in to the manager interface configured in the ``ami`` section (as the
daemon would), with every event switched on, and appends every byte Asterisk
sends — banner included — to FILE until interrupted (Ctrl-C, SIGTERM) or
``--duration`` seconds have passed.  The file is a capture that ``ami-daemon
calls`` and ``ami-daemon simulate`` read.  A dropped link is re-established
with backoff and recording goes on in the same file (Asterisk's new banner
and Login answer are part of the stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from ami_daemon import config
from ami_daemon.ami.connection import AmiConnection, AmiLoginError, LinkDown, LinkUp
from ami_daemon.ami.recorder import CaptureRecorder
from ami_daemon.errors import UserError

HELP = "record the raw AMI stream of a PBX into a capture file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE", help="capture file (appended)")
    parser.add_argument("--config", help="config file; its ami section says where Asterisk is")
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds (default: until interrupted)",
    )


async def _record(cfg: config.Config, out: str, duration: float | None) -> int:
    recorder = CaptureRecorder(out).open()
    connection = AmiConnection(cfg.ami, cfg.ami_secret(), on_bytes=recorder.write, name="record")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    events = 0
    sessions = 0

    async def consume() -> None:
        nonlocal events, sessions
        async for item in connection.stream():
            if type(item) is tuple:
                events += 1
            elif isinstance(item, LinkUp):
                sessions = item.session
                print(f"recording {cfg.ami.host}:{cfg.ami.port} to {out}", file=sys.stderr)
            elif isinstance(item, LinkDown):
                print(f"link lost ({item.reason}); reconnecting", file=sys.stderr)

    try:
        try:
            await connection.start()
        except AmiLoginError as exc:
            raise UserError(str(exc)) from None
        consumer = asyncio.create_task(consume())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        await connection.close()
        await consumer
    finally:
        await connection.close()
        recorder.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print(
        f"recorded {recorder.bytes_written} bytes, {events} events, {sessions} session(s) to {out}",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be greater than 0, got {args.duration}")
    return asyncio.run(_record(cfg, args.out, args.duration))

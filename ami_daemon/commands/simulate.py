"""``ami-daemon simulate CAPTURE...``: serve captures like Asterisk's AMI (and FastAGI).

A stand-in PBX for tests and demos (see ``ami_daemon.ami.simulator``): it
listens on ``--host``/``--port`` (0 picks a free port), accepts the daemon's
Login (the ``ami`` section of ``--config`` gives the default user and
secret), and replays the events of the captures — scenario folders
(``ami.raw`` + ``agi.log``) or capture files — paced by their timestamps
(``--speed``) or as fast as possible (``--fast``).  ``--copies`` repeats each
capture as distinct calls (re-keyed), ``--interleave`` overlaps them.
``--drop-after``/``--stall-after`` break the link after N events (closed, or
open but silent), ``--lost-events`` are then played to nobody.  With
``--agi agi://HOST:PORT`` the captures' AGI calls are made against that
FastAGI server and what it set is printed as JSON lines.

The first line on stdout is ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from urllib.parse import urlsplit

from ami_daemon import config
from ami_daemon.ami.simulator import Simulator, SimulatorOptions
from ami_daemon.ami.timeline import build_timeline, load_capture
from ami_daemon.errors import UserError

HELP = "serve AMI captures like Asterisk (and FastAGI calls) for tests and demos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captures", metavar="CAPTURE", nargs="+", help="capture file or folder")
    parser.add_argument("--config", help="config file; its ami section gives user and secret")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5038, help="TCP port (0 = any free port)")
    parser.add_argument("--username", help="AMI user to accept (default: ami.username)")
    parser.add_argument("--secret", help="its secret (default: the configured AMI secret)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, default=1.0, help="replay speed factor on the Timestamp clock"
    )
    pace.add_argument("--fast", action="store_true", help="replay as fast as possible")
    parser.add_argument("--copies", type=int, default=1, help="distinct copies of each capture")
    parser.add_argument(
        "--interleave",
        type=float,
        metavar="SECONDS",
        help="start each copy this long after the previous one (default: one after another)",
    )
    parser.add_argument("--drop-after", type=int, metavar="N", help="close the link after N events")
    parser.add_argument(
        "--stall-after", type=int, metavar="N", help="go silent (half-open link) after N events"
    )
    parser.add_argument(
        "--lost-events", type=int, default=0, metavar="K", help="events played to nobody after it"
    )
    parser.add_argument("--agi", metavar="URL", help="FastAGI server, agi://HOST:PORT")
    parser.add_argument(
        "--exit-when-done", action="store_true", help="exit once everything was replayed"
    )


def _agi_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "agi" or not parts.hostname:
        raise UserError(f"--agi: expected agi://HOST:PORT, got {url!r}")
    try:
        port = parts.port or 4573
    except ValueError:
        raise UserError(f"--agi: bad port in {url!r}") from None
    return parts.hostname, port


def _options(args: argparse.Namespace) -> SimulatorOptions:
    cfg = config.load(args.config)
    ami = cfg.ami
    if args.speed is not None and args.speed <= 0:
        raise UserError(f"--speed must be greater than 0, got {args.speed}")
    for name in ("drop_after", "stall_after"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.drop_after is not None and args.stall_after is not None:
        raise UserError("--drop-after and --stall-after cannot be combined")
    if args.lost_events < 0:
        raise UserError(f"--lost-events must not be negative, got {args.lost_events}")
    return SimulatorOptions(
        username=args.username or ami.username,
        secret=args.secret if args.secret is not None else cfg.ami_secret(),
        speed=None if args.fast else args.speed,
        drop_after=args.drop_after,
        stall_after=args.stall_after,
        lost_events=args.lost_events,
        agi=_agi_address(args.agi) if args.agi else None,
    )


async def _serve(args: argparse.Namespace, options: SimulatorOptions) -> int:
    captures = [load_capture(path) for path in args.captures]
    timeline = build_timeline(captures, copies=args.copies, interleave=args.interleave)
    simulator = Simulator(timeline, options)
    try:
        await simulator.start(args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    print(f"listening on {simulator.host}:{simulator.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waiter = asyncio.create_task(simulator.wait_done())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            print(
                f"replay finished: {simulator.played} events played, {simulator.sent} sent",
                flush=True,
            )
            for outcome in simulator.agi_outcomes:
                print(json.dumps({"agi": outcome.to_json_dict()}, ensure_ascii=False), flush=True)
            if not args.exit_when_done:
                await stop.wait()
    finally:
        waiter.cancel()
        stopper.cancel()
        await asyncio.gather(waiter, stopper, return_exceptions=True)
        await simulator.close()
    return 0


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    try:
        return asyncio.run(_serve(args, options))
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()

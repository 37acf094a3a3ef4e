"""``ami-daemon calls CAPTURE``: the calls of an AMI capture file, as JSON lines.

Reads the capture (DESIGN "contract: capture files") through the same reader
and tracker the live daemon uses and prints one JSON object per finished
conversation, in the order they ended, then the calls still open at the end
of the capture as ``interrupted``.  Only the ``pbx`` section of the config is
used; a file holding nothing else is enough.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ami_daemon import config
from ami_daemon.ami.reader import Malformed, read_capture
from ami_daemon.calls.summary import CallSummary
from ami_daemon.calls.tracker import Tracker
from ami_daemon.errors import UserError

HELP = "print the calls of an AMI capture file as JSON lines"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="CAPTURE", help="raw AMI capture file")
    parser.add_argument("--config", help="config file; only its pbx section is used")


def run(args: argparse.Namespace) -> int:
    pbx = config.load(args.config).pbx
    path = Path(args.capture)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a capture file")
    tracker = Tracker(pbx)
    out = sys.stdout

    def emit(summaries: list[CallSummary]) -> None:
        for summary in summaries:
            out.write(json.dumps(summary.to_json_dict(), ensure_ascii=False) + "\n")

    def malformed(problem: Malformed) -> None:
        log.warning("%s: %s", path, problem)

    try:
        for message in read_capture(path, malformed):
            emit(tracker.feed(message))
    except FileNotFoundError:
        raise UserError(f"{path}: capture file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the capture file: {exc.strerror or exc}") from None
    emit(tracker.finish())
    out.flush()
    return 0

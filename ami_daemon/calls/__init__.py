"""The pure call tracker: AMI events in, call summaries out (no I/O, no asyncio).

``Tracker`` (tracker.py) follows channels and emits one ``CallSummary``
(summary.py) per finished conversation, as DESIGN's ``ami-daemon calls``
contract defines it.
"""

from ami_daemon.calls.summary import CallStatus, CallSummary, Direction, Transfer, TransferKind
from ami_daemon.calls.tracker import Tracker

__all__ = ["CallStatus", "CallSummary", "Direction", "Tracker", "Transfer", "TransferKind"]

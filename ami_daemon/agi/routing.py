"""The two things the lookup needs from the rules, compiled small.

The routing decision needs only "does this DID (or its trunk) route known
clients to their responsible?" and "is this caller on the exception list?".
:class:`RoutingTable` holds exactly that, layered as the rules layer settings
(a DID's override, then its trunk's, then ``defaults:``), and serialises to a
few hundred bytes of JSON: the classic script reads that instead of importing
PyYAML and validating every rule file on each call (see ``classic_settings``).
The FastAGI server builds it from the :class:`~ami_daemon.rules.model.RuleSet`
it loaded.  :func:`rules_signature` names the state of the rule files (names,
sizes, modification times) so that a compiled table is rebuilt when an admin
edits them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ami_daemon.agi.decision import RoutingFlags

if TYPE_CHECKING:
    from ami_daemon.rules.model import RuleSet

#: The suffixes the rules loader reads (``rules/loader.py`` RULE_SUFFIXES).
RULE_SUFFIXES = (".yaml", ".yml")
_SETTING = "route_to_responsible"


@dataclass(frozen=True)
class RoutingTable:
    """Routing flag per DID / trunk and the exception phones (all E.164)."""

    default_route: bool = False
    number_route: Mapping[str, bool] = field(default_factory=dict)
    trunk_route: Mapping[str, bool] = field(default_factory=dict)
    exception_phones: frozenset[str] = frozenset()

    @classmethod
    def from_ruleset(cls, rules: RuleSet) -> RoutingTable:
        """The table of a validated rule set (only overrides that set the flag count)."""
        numbers: dict[str, bool] = {}
        trunks: dict[str, bool] = {}
        for override in rules.overrides:
            if _SETTING not in override.values:
                continue
            target = numbers if override.kind.value == "number" else trunks
            target[override.key] = bool(override.values[_SETTING])
        return cls(
            default_route=rules.defaults.route_to_responsible,
            number_route=numbers,
            trunk_route=trunks,
            exception_phones=frozenset(rules.exception_phones),
        )

    def route_to_responsible(self, did_e164: str | None, trunk: str | None) -> bool:
        if did_e164 is not None and did_e164 in self.number_route:
            return self.number_route[did_e164]
        if trunk is not None and trunk in self.trunk_route:
            return self.trunk_route[trunk]
        return self.default_route

    def is_exception(self, e164: str | None) -> bool:
        return e164 is not None and e164 in self.exception_phones

    def flags(self, did_e164: str | None, trunk: str | None, caller: str | None) -> RoutingFlags:
        return RoutingFlags(self.route_to_responsible(did_e164, trunk), self.is_exception(caller))

    def to_json(self) -> dict[str, Any]:
        return {
            "default_route": self.default_route,
            "number_route": dict(self.number_route),
            "trunk_route": dict(self.trunk_route),
            "exception_phones": sorted(self.exception_phones),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingTable:
        """Inverse of :meth:`to_json`; ValueError on anything else."""
        try:
            numbers = {str(k): bool(v) for k, v in data["number_route"].items()}
            trunks = {str(k): bool(v) for k, v in data["trunk_route"].items()}
            return cls(
                default_route=bool(data["default_route"]),
                number_route=numbers,
                trunk_route=trunks,
                exception_phones=frozenset(str(p) for p in data["exception_phones"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a routing table: {exc}") from None


def rules_signature(path: Path) -> list[list[Any]]:
    """``[[name, size, mtime_ns], …]`` of the rule files ``path`` names (a folder or a file).

    Same selection as the rules loader; ``[]`` when there is nothing to read.
    """
    try:
        if path.is_file():
            st = path.stat()
            return [[str(path), st.st_size, st.st_mtime_ns]]
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.name.endswith(RULE_SUFFIXES):
                    continue
                if not entry.is_file():
                    continue
                st = entry.stat()
                entries.append([entry.name, st.st_size, st.st_mtime_ns])
        return sorted(entries)
    except OSError:
        return []

"""Automation matching (pure): conditions, first match wins, time windows in pbx.timezone."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ami_daemon.rules import (
    AutomationFacts,
    AutomationRule,
    CallDirection,
    CreateFor,
    TimeWindow,
    default_rules_path,
    load_rules,
    local_time,
)

MADRID = ZoneInfo("Europe/Madrid")


def facts(
    when: datetime,
    *,
    did: str | None = "+34911234567",
    trunk: str | None = "trunk",
    queue: str | None = "sales",
    direction: str = "inbound",
    answered: bool = True,
    country: str | None = "ES",
) -> AutomationFacts:
    return AutomationFacts(did, trunk, queue, direction, answered, country, when)


def madrid(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID)


FRIDAY_NOON = madrid(2026, 11, 27, 12)  # 2026-11-27 is a Friday


def test_a_rule_without_conditions_matches_everything() -> None:
    rule = AutomationRule(name="all", file="f", line=1, pipeline="general")
    assert rule.matches(facts(FRIDAY_NOON))
    assert rule.matches(facts(FRIDAY_NOON, did=None, trunk=None, queue=None, country=None))


@pytest.mark.parametrize(
    ("condition", "matching", "not_matching"),
    [
        ({"numbers": frozenset({"+34911234567"})}, {}, {"did": "+34911234500"}),
        ({"trunks": frozenset({"trunk"})}, {}, {"trunk": "other"}),
        ({"queues": frozenset({"sales"})}, {}, {"queue": None}),
        (
            {"direction": CallDirection.INCOMING},
            {"direction": "incoming"},
            {"direction": "outbound"},
        ),
        (
            {"direction": CallDirection.OUTGOING},
            {"direction": "outbound"},
            {"direction": "internal"},
        ),
        ({"answered": False}, {"answered": False}, {"answered": True}),
        ({"caller_countries": frozenset({"PT"})}, {"country": "pt"}, {"country": None}),
    ],
)
def test_each_condition(
    condition: dict[str, object], matching: dict[str, object], not_matching: dict[str, object]
) -> None:
    rule = AutomationRule(name="r", file="f", line=1, source="WEB", **condition)  # type: ignore[arg-type]
    assert rule.matches(facts(FRIDAY_NOON, **matching))  # type: ignore[arg-type]
    assert not rule.matches(facts(FRIDAY_NOON, **not_matching))  # type: ignore[arg-type]


def test_all_conditions_must_hold() -> None:
    rule = AutomationRule(
        name="r", file="f", line=1, queues=frozenset({"sales"}), answered=False, source="WEB"
    )
    assert rule.matches(facts(FRIDAY_NOON, answered=False))
    assert not rule.matches(facts(FRIDAY_NOON, answered=True))
    assert not rule.matches(facts(FRIDAY_NOON, queue="support", answered=False))


def test_time_window_start_included_end_excluded() -> None:
    rule = AutomationRule(
        name="office", file="f", line=1, time_window=TimeWindow(time(9), time(18)), source="WEB"
    )
    assert rule.matches(facts(madrid(2026, 11, 27, 9, 0)))
    assert rule.matches(facts(madrid(2026, 11, 27, 17, 59)))
    assert not rule.matches(facts(madrid(2026, 11, 27, 18, 0)))
    assert not rule.matches(facts(madrid(2026, 11, 27, 8, 59)))


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    night = AutomationRule(
        name="weeknights",
        file="f",
        line=1,
        weekdays=frozenset(range(5)),  # mon-fri
        time_window=TimeWindow(time(22), time(6)),
        source="WEB",
    )
    assert night.time_window is not None and night.time_window.crosses_midnight
    assert night.matches(facts(madrid(2026, 11, 27, 23, 30)))  # Friday night
    assert night.matches(facts(madrid(2026, 11, 28, 2, 0)))  # Saturday 02:00 = Friday's night
    assert not night.matches(facts(madrid(2026, 11, 28, 23, 0)))  # Saturday night
    assert not night.matches(facts(madrid(2026, 11, 30, 2, 0)))  # Monday 02:00 = Sunday's night
    assert night.matches(facts(madrid(2026, 11, 30, 22, 0)))  # Monday night
    assert not night.matches(facts(madrid(2026, 11, 27, 6, 0)))  # end excluded
    assert not night.matches(facts(madrid(2026, 11, 27, 12, 0)))  # midday


def test_weekdays_without_a_window() -> None:
    weekend = AutomationRule(name="w", file="f", line=1, weekdays=frozenset({5, 6}), source="WEB")
    assert not weekend.matches(facts(madrid(2026, 11, 27, 23, 59)))  # Friday
    assert weekend.matches(facts(madrid(2026, 11, 28, 0, 0)))  # Saturday


def test_local_time_uses_the_pbx_timezone_across_dst() -> None:
    """19:30 UTC is 20:30 in Madrid in winter (CET) and 21:30 in summer (CEST)."""
    winter = local_time(datetime(2026, 11, 27, 19, 30, tzinfo=UTC), MADRID)
    assert (winter.hour, winter.minute) == (20, 30)
    summer = local_time(datetime(2026, 7, 3, 19, 30), MADRID)  # naive = UTC
    assert summer.hour == 21
    evening = AutomationRule(
        name="e", file="f", line=1, time_window=TimeWindow(time(21), time(23)), source="WEB"
    )
    assert not evening.matches(facts(winter))
    assert evening.matches(facts(summer))
    # 23:30 UTC on Friday is already Saturday in Madrid
    saturday = local_time(datetime(2026, 11, 27, 23, 30, tzinfo=UTC), MADRID)
    weekend = AutomationRule(name="w", file="f", line=1, weekdays=frozenset({5}), source="WEB")
    assert weekend.matches(facts(saturday))


def test_first_match_wins_in_the_shipped_rules() -> None:
    rules = load_rules(default_rules_path(), "ES")
    # a Portuguese caller on the support queue: foreign-callers comes first
    hit = rules.first_automation_match(facts(FRIDAY_NOON, queue="support", country="PT"))
    assert hit is not None and hit.name == "foreign-callers"
    hit = rules.first_automation_match(facts(FRIDAY_NOON, queue="support"))
    assert hit is not None and (hit.name, hit.pipeline, hit.stage) == (
        "support-queue",
        "support",
        "NEW",
    )
    # missed on Friday at 21:00 local (20:00 UTC): after hours
    evening = local_time(datetime(2026, 11, 27, 20, 0, tzinfo=UTC), MADRID)
    hit = rules.first_automation_match(facts(evening, answered=False))
    assert hit is not None and (hit.name, hit.responsible) == ("missed-after-hours", "201")
    # the same call answered, or at noon, matches nothing
    assert rules.first_automation_match(facts(evening, answered=True)) is None
    assert rules.first_automation_match(facts(FRIDAY_NOON, answered=False)) is None
    # an outgoing call to a foreign number is not "incoming"
    assert (
        rules.first_automation_match(facts(FRIDAY_NOON, direction="outbound", country="PT")) is None
    )


def test_rules_from_yaml_match_like_the_model(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        """
automation:
  - name: fri-night
    when:
      numbers: ["911 23 45 67"]
      weekdays: [fri-sun]
      time: 22:00-06:00
    then: {source: WEB}
""",
        encoding="utf-8",
    )
    rule = load_rules(tmp_path, "ES").automation[0]
    assert rule.numbers == frozenset({"+34911234567"})
    assert rule.weekdays == frozenset({4, 5, 6})
    assert rule.matches(facts(madrid(2026, 11, 30, 1, 0)))  # Monday 01:00 = Sunday's night
    assert not rule.matches(facts(madrid(2026, 11, 30, 1, 0), did="+34911234500"))
    assert rule.describe_conditions() == "number +34911234567, on fri,sat,sun, between 22:00-06:00"


@pytest.mark.parametrize(
    ("create_for", "direction", "covered"),
    [
        (CreateFor.ALL, "inbound", True),
        (CreateFor.ALL, "outbound", True),
        (CreateFor.ALL, "internal", False),
        (CreateFor.INCOMING, "inbound", True),
        (CreateFor.INCOMING, "outbound", False),
        (CreateFor.OUTGOING, "outgoing", True),
        (CreateFor.OUTGOING, "inbound", False),
    ],
)
def test_create_for_covers_directions(create_for: CreateFor, direction: str, covered: bool) -> None:
    assert create_for.covers(direction) is covered

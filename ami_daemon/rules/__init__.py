"""Rules: the admin's YAML settings (validated into a RuleSet) and, later, the CRM decision."""

from ami_daemon.rules.loader import (
    RulesSource,
    default_rules_path,
    load_rules,
    try_load_rules,
)
from ami_daemon.rules.model import (
    AutomationFacts,
    AutomationRule,
    CallDirection,
    CreateFor,
    CrmMode,
    DealCreationMode,
    NumberSettings,
    Origin,
    Override,
    OverrideKind,
    Pipeline,
    Provenance,
    QueueGroup,
    RuleSet,
    TimeWindow,
    UnknownCallerScenario,
    local_time,
)
from ami_daemon.rules.problems import RuleProblem, RulesError

__all__ = [
    "AutomationFacts",
    "AutomationRule",
    "CallDirection",
    "CreateFor",
    "CrmMode",
    "DealCreationMode",
    "NumberSettings",
    "Origin",
    "Override",
    "OverrideKind",
    "Pipeline",
    "Provenance",
    "QueueGroup",
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "RulesSource",
    "TimeWindow",
    "UnknownCallerScenario",
    "default_rules_path",
    "load_rules",
    "local_time",
    "try_load_rules",
]

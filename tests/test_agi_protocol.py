"""The AGI wire format: Asterisk's environment as untrusted input, our commands as safe output."""

from __future__ import annotations

import pytest

from ami_daemon.agi.protocol import (
    MAX_ENV_LINES,
    BadEnvironment,
    EnvironmentParser,
    parse_environment,
    parse_response,
    quote,
    set_variable_command,
)
from tests.test_agi_helpers import asterisk_parse_args, replace_env, trace_sessions

TRACE = trace_sessions()[0]


def env_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n\n"


def test_every_recorded_environment_parses_complete_and_in_order() -> None:
    for session in trace_sessions():
        env = parse_environment(env_text(session.env_lines))
        assert env.complete, session.name
        assert env.anomalies == (), session.name
        assert env.script == "crm_lookup"
        assert env.get(
            "agi_channel",
        ).startswith("SIP/trunk-")  # type: ignore[union-attr]
        assert env.get("agi_accountcode") == ""


def test_classic_environment_without_the_network_pair_is_complete() -> None:
    lines = [x for x in TRACE.env_lines if not x.startswith("agi_network")]
    env = parse_environment(env_text(lines))
    assert env.complete
    assert env.script is None


def test_a_newline_in_the_caller_name_cannot_override_the_caller_number() -> None:
    lines = replace_env(TRACE.env_lines, "agi_calleridname", "Evil\nagi_callerid: 600333444")
    env = parse_environment(env_text(lines))
    assert env.get("agi_callerid") == "600111222"
    assert env.get("agi_calleridname") == "Evil\nagi_callerid: 600333444"
    assert env.complete
    assert len(env.anomalies) == 1


def test_a_caller_name_posing_as_later_keys_does_not_replace_them() -> None:
    lines = replace_env(TRACE.env_lines, "agi_calleridname", "x\nagi_dnid: 911234500")
    env = parse_environment(env_text(lines))
    assert env.get("agi_dnid") == "911234567"
    assert env.complete


def test_a_blank_line_inside_a_value_ends_the_block_but_marks_it_incomplete() -> None:
    lines = replace_env(TRACE.env_lines, "agi_calleridname", "x\n\n200 result=1 (930000000)")
    env = parse_environment(env_text(lines))
    assert env.get("agi_callerid") == "600111222"
    assert not env.complete


def test_unknown_new_keys_are_kept_aside_and_arguments_read() -> None:
    lines = [*TRACE.env_lines[:5], "agi_future_key: 1", *TRACE.env_lines[5:]]
    lines += ["agi_arg_1: /etc/ami-daemon/config.yaml", "agi_arg_2: x"]
    env = parse_environment(env_text(lines))
    assert env.complete
    assert env.extras == {"agi_future_key": "1"}
    assert env.args == ("/etc/ami-daemon/config.yaml", "x")


def test_environment_size_is_bounded() -> None:
    parser = EnvironmentParser()
    with pytest.raises(BadEnvironment, match="environment lines"):
        for _ in range(MAX_ENV_LINES + 1):
            parser.feed("junk")
    parser = EnvironmentParser()
    with pytest.raises(BadEnvironment, match="bytes"):
        for _ in range(50):
            parser.feed("agi_request: " + "x" * 4000)


@pytest.mark.parametrize(
    "value",
    [
        'O"Brien',
        "back\\slash\\",
        'two\nlines EXEC System "rm -rf /"',
        "cr\r\nlf",
        "nul\x00byte",
        "Иван Петров; Añejo & Co",
        '"',
        "\\",
        "",
        "trailing space ",
        "tab\there",
    ],
)
def test_quoted_values_come_back_intact_as_one_argument(value: str) -> None:
    command = set_variable_command("CALLERID(name)", value)
    assert "\n" not in command and "\r" not in command and "\x00" not in command
    args = asterisk_parse_args(command)
    assert args[:3] == ["SET", "VARIABLE", "CALLERID(name)"]
    assert len(args) == 4
    expected = value
    for control in "\r\n\x00\t":
        expected = expected.replace(control, " ")
    assert args[3] == expected.strip()


def test_quote_bounds_length_and_names_are_checked() -> None:
    assert len(asterisk_parse_args("X " + quote("a" * 10_000))[1]) == 256
    with pytest.raises(ValueError, match="variable name"):
        set_variable_command('X" EXEC', "1")


def test_responses_as_asterisk_writes_them() -> None:
    ok = parse_response("200 result=1 (911234567)")
    assert ok is not None and ok.variable() == "911234567"
    unset = parse_response("200 result=0")
    assert unset is not None and unset.variable() is None
    paren = parse_response("200 result=1 (Ruiz (Ferreteria))")
    assert paren is not None and paren.variable() == "Ruiz (Ferreteria)"
    assert parse_response("510 Invalid or unknown command") is not None
    usage = parse_response("520-Invalid command syntax.  Proper usage follows:")
    assert usage is not None and usage.text.startswith("-")
    assert parse_response("agi_callingpres: 0") is None
    assert parse_response("HANGUP") is None

"""Reading YAML as nodes, so every value keeps its line for error messages.

``yaml.safe_load`` forgets where a value was written and silently keeps the
last of two equal keys.  We compose the document into nodes instead (each has
``start_mark``) and read scalars from their *raw text*: YAML 1.1 would turn
``22:00`` into the integer 79200, ``0034600111222`` into an octal number and
``911234567`` into an int, none of which an admin meant.  Booleans are the one
scalar type we take from YAML's resolver (``yes``/``no``/``true``/``false``/
``on``/``off``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from ami_daemon.rules.problems import RuleProblem

BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"
_TRUE_WORDS = frozenset({"yes", "true", "on", "y"})


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def kind_of(node: yaml.Node) -> str:
    """How a node reads to an admin, for "must be X, got Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and node.style is None:
        return "nothing"
    return f"{node.value!r}"


@dataclass(frozen=True)
class Entry:
    """One ``key: value`` of a mapping: the key's raw text and line, the value node."""

    key: str
    line: int
    value: yaml.Node


def compose(text: str, file: str, problems: list[RuleProblem]) -> yaml.Node | None:
    """The one document in ``text`` as a node tree (None for an empty file).

    A YAML syntax error becomes a problem naming its line; several documents in
    one file (``---``) are refused: use several files instead.
    """
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        reason = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            reason += f" ({exc.context} at line {int(exc.context_mark.line) + 1})"
        problems.append(RuleProblem(file, line, "", f"YAML syntax error: {reason}"))
        return None
    except yaml.YAMLError as exc:  # reader errors: bad characters
        problems.append(RuleProblem(file, None, "", f"YAML syntax error: {exc}"))
        return None
    documents = [d for d in documents if d is not None]
    if len(documents) > 1:
        problems.append(
            RuleProblem(
                file,
                line_of(documents[1]),
                "",
                "several YAML documents (---) in one file; put them in separate files",
            )
        )
        return None
    return documents[0] if documents else None


class NodeReader:
    """Typed reads of nodes of one file, each mistake recorded with its line."""

    def __init__(self, file: str, problems: list[RuleProblem]) -> None:
        self.file = file
        self.problems = problems

    def problem(self, where: yaml.Node | int | None, key: str, reason: str) -> None:
        line = line_of(where) if isinstance(where, yaml.Node) else where
        self.problems.append(RuleProblem(self.file, line, key, reason))

    def entries(self, node: yaml.Node, key: str, what: str = "a mapping") -> list[Entry] | None:
        """The entries of a mapping node in order; duplicate keys are problems.

        YAML merge keys (``<<: *common``) are honoured: merged entries come
        first, keys written in the mapping itself win over them.
        """
        if not isinstance(node, yaml.MappingNode):
            if is_null(node):
                return []
            self.problem(node, key, f"must be {what}, got {kind_of(node)}")
            return None
        seen: dict[str, int] = {}
        found: list[Entry] = []
        merged: list[Entry] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == MERGE_TAG:
                merged.extend(self._merged(value_node, key, what))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, key, f"a key must be plain text, got {kind_of(key_node)}")
                continue
            name = str(key_node.value)
            path = join(key, name)
            if name in seen:
                self.problem(key_node, path, f"duplicate key (first at line {seen[name]})")
                continue
            seen[name] = line_of(key_node)
            found.append(Entry(name, line_of(key_node), value_node))
        inherited: dict[str, Entry] = {}
        for entry in merged:
            if entry.key not in seen:
                inherited.setdefault(entry.key, entry)
        return [*inherited.values(), *found]

    def _merged(self, node: yaml.Node, key: str, what: str) -> list[Entry]:
        """Entries of a YAML merge (``<<: *anchor`` or ``<<: [*a, *b]``), first wins."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found: list[Entry] = []
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem(
                    source, join(key, "<<"), f"must merge a mapping, got {kind_of(source)}"
                )
                continue
            found.extend(self.entries(source, key, what) or [])
        return found

    def unknown_keys(self, entries: list[Entry], key: str, known: tuple[str, ...]) -> None:
        for entry in entries:
            if entry.key not in known:
                self.problem(
                    entry.line,
                    join(key, entry.key),
                    f"unknown key (known keys: {', '.join(known)})",
                )

    def items(self, node: yaml.Node, key: str, example: str = "") -> list[yaml.Node] | None:
        """The items of a list node; anything else is a problem."""
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        hint = f", e.g. {example}" if example else ""
        self.problem(node, key, f"must be a list{hint}, got {kind_of(node)}")
        return None

    def text(self, node: yaml.Node, key: str) -> str | None:
        """A scalar's raw text, stripped; empty or not a scalar is a problem."""
        if not isinstance(node, yaml.ScalarNode) or is_null(node):
            self.problem(node, key, f"must be text, got {kind_of(node)}")
            return None
        value = str(node.value).strip()
        if not value:
            self.problem(node, key, "must not be empty")
            return None
        return value

    def texts(self, node: yaml.Node, key: str, example: str = "") -> Iterator[tuple[str, int]]:
        """Each item of a list of scalars with its line; bad items are problems."""
        items = self.items(node, key, example)
        for index, item in enumerate(items or []):
            value = self.text(item, f"{key}[{index + 1}]")
            if value is not None:
                yield value, line_of(item)

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
            return str(node.value).lower() in _TRUE_WORDS
        self.problem(node, key, f"must be yes or no (true/false), got {kind_of(node)}")
        return None

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(node, key)
        if value is None:
            return None
        if value.lower() not in choices:
            self.problem(node, key, f"must be one of {', '.join(choices)}, got {value!r}")
            return None
        return value.lower()


def is_null(node: yaml.Node) -> bool:
    """An empty value (``key:`` with nothing after it, or ``null``/``~``)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG and node.style is None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

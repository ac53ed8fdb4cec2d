"""A newcomer's first hour on the CLI: --help names every action; the node `up` made is easy to find."""

from __future__ import annotations

import re

from .conftest import pacsdeck

_ENTRY = re.compile(r"^    (\S+)\s", re.M)


def _listed(text: str, heading: str) -> list[str]:
    """The names argparse lists under a subcommand heading (COMMAND, ACTION) in a --help text."""
    if f"  {heading}\n" not in text:
        return []
    return _ENTRY.findall(text.split(f"  {heading}\n", 1)[1].split("\n\n", 1)[0])


def _actions(group: str) -> list[str]:
    return _listed(pacsdeck(group, "--help", check=True).stdout, "ACTION")


def test_top_level_help_lists_every_action_of_every_group():
    top = pacsdeck("--help", check=True).stdout
    text = " ".join(top.split())  # argparse wraps long lines
    assert _actions("node") == ["init", "run", "reindex", "pools", "migrate", "verify", "check"]
    with_actions = {group: _actions(group) for group in _listed(top, "COMMAND")}
    with_actions = {group: actions for group, actions in with_actions.items() if actions}
    assert {"node", "agent", "fleet"} <= set(with_actions)
    for group, actions in with_actions.items():
        assert re.search(rf"\b{group} .*?: {', '.join(actions)}\b", text), (group, actions)

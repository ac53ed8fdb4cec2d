"""A newcomer's first hour on the CLI: --help names every action; the node `up` made is easy to find."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import REPO, dcmtk, make_node, pacsdeck

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
    assert _actions("node") == ["init", "run", "reindex", "pools", "migrate", "verify", "backup", "check"]
    with_actions = {group: _actions(group) for group in _listed(top, "COMMAND")}
    with_actions = {group: actions for group, actions in with_actions.items() if actions}
    assert {"node", "agent", "fleet"} <= set(with_actions)
    for group, actions in with_actions.items():
        assert re.search(rf"\b{group} .*?: {', '.join(actions)}\b", text), (group, actions)


def test_up_prints_the_export_line_and_writes_a_fleet_file_only_when_there_is_none(tmp_path, monkeypatch, capsys):
    from console.inventory import load_fleet
    from pacsdeck.cli_up import make_findable

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PACSDECK_FLEET", raising=False)
    node = make_node(tmp_path / "demo", ae_title="DEMOBOX")
    make_findable(node.config)
    printed = capsys.readouterr()
    assert printed.out == f"export PACSDECK_CONFIG={node.config}\n"
    fleet_file = tmp_path / "xdg" / "pacsdeck" / "fleet.yaml"
    assert str(fleet_file) in printed.err
    (entry,) = load_fleet(fleet_file).nodes
    assert (entry.name, entry.transport, entry.config) == ("demobox", "local", str(node.config.resolve()))

    written = fleet_file.read_text()
    make_findable(node.config)  # the next `up`: the node is listed already, nothing to say or write
    assert capsys.readouterr().err == "" and fleet_file.read_text() == written

    other = make_node(tmp_path / "other", ae_title="OTHER")
    make_findable(other.config)  # a fleet file of the user's own is never rewritten: a hint instead
    hint = capsys.readouterr().err
    assert fleet_file.read_text() == written
    assert "does not list this node" in hint and str(other.config.resolve()) in hint


def test_a_missing_config_names_the_ways_to_give_one_and_the_node_folder_here(tmp_path):
    node = make_node(tmp_path / "demo")
    env = {**os.environ, "PACSDECK_CONFIG": str(tmp_path / "nowhere" / "node.yaml")}
    for args, code in ((("node", "run"), 2), (("agent", "call", "node.status"), 6), (("node", "check"), 3)):
        done = subprocess.run(
            [sys.executable, "-m", "pacsdeck.cli", *args], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert done.returncode == code, (args, done.stderr)
        said = done.stderr + done.stdout
        assert "nowhere/node.yaml: no such file" in said and "--config FILE" in said, args
        assert "export PACSDECK_CONFIG=FILE" in said and f"found here: {node.config}" in said, args
    found = subprocess.run(
        [sys.executable, "-m", "pacsdeck.cli", "agent", "call", "node.status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PACSDECK_CONFIG": str(node.config)},
    )
    assert found.returncode == 0, found.stderr  # the export line `up` prints is all it takes


def test_the_readme_quick_start_echo_and_store_are_accepted_with_the_default_settings(node_factory):
    """The quick start's first echoscu/storescu block, run as written against a node with no AE registered."""
    import shlex

    from storage import synthetic

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```sh\n")[1:] if "echoscu" in b.split("```")[0]).split("```")[0]
    node = node_factory(aets=[]).start()  # open_mode off, nobody registered: the default settings
    (dicom,) = synthetic.write_study(node.dir / "files", next(synthetic.studies(1)), 1, rows=16, cols=16)
    for line in block.strip().splitlines():
        words = shlex.split(line.replace("demo/node.yaml", str(node.config)).replace("11112", str(node.port)))
        words = [w.replace("some/file.dcm", str(dicom)) for w in words if w != "TCP_NODELAY=1"]
        done = pacsdeck(*words[1:]) if words[0] == "pacsdeck" else dcmtk(words[0], *words[1:], timeout=60)
        assert done.returncode == 0, (line, done.stdout + done.stderr)
    assert len(node.rows("SELECT sop_uid FROM instances")) == 1

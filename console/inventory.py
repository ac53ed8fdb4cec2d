"""The fleet file: which nodes the console watches and how to reach each, parsed once into frozen dataclasses."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from .yamlfile import read_yaml

LOCAL, SSH = "local", "ssh"
TRANSPORTS = (LOCAL, SSH)
DEFAULT_AGENT_COMMAND = ("pacsdeck", "agent", "stdio")
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_CALL_TIMEOUT = 10.0

# Names appear in the table, in `fleet trust NAME` and in logs: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A host name or address; never starts with '-' so it can never be read as an option anywhere.
_HOST = re.compile(r"^[A-Za-z0-9_.:%-]{1,253}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")

_NODE_KEYS = (
    "name",
    "site",
    "tags",
    "transport",
    "config",
    "host",
    "port",
    "user",
    "key",
    "agent_command",
    "poll_interval",
    "connect_timeout",
    "call_timeout",
)
# What `defaults:` may set for every node (per-node values win). Identity and address stay per node.
_DEFAULTABLE = (
    "site",
    "tags",
    "transport",
    "port",
    "user",
    "key",
    "agent_command",
    "poll_interval",
    "connect_timeout",
    "call_timeout",
    "config",
)
_TOP_KEYS = ("nodes", "known_hosts", "defaults")


class FleetConfigError(ValueError):
    """A bad fleet file: `field` names the offending key ("nodes[2].port"), the message says what to do."""

    def __init__(self, field: str, message: str, source: Path | None = None):
        self.field = field
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}")


@dataclass(frozen=True)
class NodeEntry:
    name: str
    site: str
    tags: tuple[str, ...]
    transport: str
    config: str | None
    host: str | None
    port: int
    user: str | None
    key: Path | None
    agent_command: tuple[str, ...]
    poll_interval: float
    connect_timeout: float
    call_timeout: float

    @property
    def address(self) -> str:
        """Where the node is, for tables and messages: user@host:port, or `local`."""
        if self.transport == LOCAL:
            return "local"
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class Fleet:
    nodes: tuple[NodeEntry, ...]
    known_hosts: Path
    source: Path | None

    def node(self, name: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.name == name:
                return entry
        raise KeyError(name)


def config_home() -> Path:
    """$XDG_CONFIG_HOME, else ~/.config (the XDG base directory default)."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"


def default_fleet_path() -> Path:
    """$PACSDECK_FLEET, else $XDG_CONFIG_HOME/pacsdeck/fleet.yaml (~/.config/pacsdeck/fleet.yaml)."""
    env = os.environ.get("PACSDECK_FLEET")
    if env:
        return Path(env).expanduser()
    return config_home() / "pacsdeck" / "fleet.yaml"


def default_known_hosts() -> Path:
    """pacsdeck's own known_hosts, separate from ~/.ssh/known_hosts so trusting a node is a pacsdeck decision."""
    return config_home() / "pacsdeck" / "known_hosts"


def load_fleet(path: Path | None = None) -> Fleet:
    """Read and validate a fleet file (default: default_fleet_path()); FleetConfigError names the field."""
    path = Path(path) if path is not None else default_fleet_path()
    data = read_yaml(
        path,
        FleetConfigError,
        "fleet",
        f"no fleet file at {path}; copy configs/fleet.example.yaml there or pass --fleet FILE",
    )
    return parse_fleet(data, source=path)


def parse_fleet(data, source: Path | None = None) -> Fleet:
    """Validate an already-parsed fleet document (a mapping with `nodes:`)."""
    base = source.parent if source else Path.cwd()

    def fail(field: str, message: str):
        raise FleetConfigError(field, message, source)

    if not isinstance(data, dict):
        fail("fleet", "expected a mapping with a `nodes:` list")
    for key in data:
        if key not in _TOP_KEYS:
            fail(str(key), f"unknown key; expected one of {', '.join(_TOP_KEYS)}")
    known_hosts = default_known_hosts()
    if data.get("known_hosts") is not None:
        known_hosts = _path(data["known_hosts"], "known_hosts", base, fail)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        fail("defaults", "expected a mapping of node settings shared by every node")
    for key in defaults:
        if key not in _DEFAULTABLE:
            fail(f"defaults.{key}", f"cannot be a default; allowed: {', '.join(_DEFAULTABLE)}")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        fail("nodes", "expected a non-empty list of nodes")
    entries: list[NodeEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(raw, dict):
            fail(where, "expected a mapping with at least `name:`")
        for key in raw:
            if key not in _NODE_KEYS:
                fail(f"{where}.{key}", f"unknown key; expected one of {', '.join(_NODE_KEYS)}")
        entry = _node(raw, defaults, where, base, fail)
        if entry.name in seen:
            fail(f"{where}.name", f"{entry.name!r} is used by an earlier node; names must be unique")
        seen.add(entry.name)
        entries.append(entry)
    return Fleet(nodes=tuple(entries), known_hosts=known_hosts, source=source)


def _node(raw: dict, defaults: dict, where: str, base: Path, fail) -> NodeEntry:
    merged = {**defaults, **raw}

    def f(key: str) -> str:
        """Name the field where the value came from: the node's own key, else `defaults.key`."""
        return f"{where}.{key}" if key in raw or key not in defaults else f"defaults.{key}"

    name = merged.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        fail(f("name"), "required: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    site = merged.get("site", "")
    if site is None:
        site = ""
    if not isinstance(site, str) or len(site) > 64 or not site.isprintable():
        fail(f("site"), "expected a short printable text")
    tags = merged.get("tags", [])
    if tags is None:
        tags = []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) and _NAME.match(t) for t in tags):
        fail(f("tags"), "expected a list of plain words (letters, digits, '.', '_', '-')")
    host = merged.get("host")
    transport = merged.get("transport", SSH if host is not None else LOCAL)
    if transport not in TRANSPORTS:
        fail(f("transport"), f"expected `local` or `ssh`, not {transport!r}")
    if host is not None and (not isinstance(host, str) or not _HOST.match(host) or host.startswith("-")):
        fail(f("host"), "expected a host name or an IP address")
    if transport == SSH and host is None:
        fail(f("host"), "required for transport ssh")
    if transport == LOCAL:
        for key in ("host", "user", "key"):
            if raw.get(key) is not None:
                fail(f(key), "only for transport ssh; a local node runs the agent on this machine")
    port = merged.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        fail(f("port"), "expected the SSH port, an integer 1-65535")
    user = merged.get("user")
    if user is not None and (not isinstance(user, str) or not _USER.match(user)):
        fail(f("user"), "expected a login name (letters, digits, '_', '.', '-')")
    key = merged.get("key")
    key_path = _path(key, f("key"), base, fail) if key is not None and transport == SSH else None
    config = merged.get("config")
    if config is not None:
        if not isinstance(config, str) or not config.strip() or "\n" in config or "\0" in config:
            fail(f("config"), "expected the path of node.yaml on that machine")
        if transport == LOCAL:  # a local path: resolve it here so the agent's working folder does not matter
            config = str(_path(config, f("config"), base, fail))
    command = merged.get("agent_command", DEFAULT_AGENT_COMMAND)
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as err:
            fail(f("agent_command"), f"cannot split it into words: {err}")
    if (
        not isinstance(command, (list, tuple))
        or not command
        or not all(isinstance(w, str) and w and "\0" not in w and "\n" not in w for w in command)
    ):
        fail(f("agent_command"), "expected a command as a list of words, e.g. [pacsdeck, agent, stdio]")
    return NodeEntry(
        name=name,
        site=site,
        tags=tuple(tags),
        transport=transport,
        config=config,
        host=host if transport == SSH else None,
        port=port,
        user=user if transport == SSH else None,
        key=key_path,
        agent_command=tuple(command),
        poll_interval=_seconds(merged, "poll_interval", DEFAULT_POLL_INTERVAL, f, fail, minimum=0.5),
        connect_timeout=_seconds(merged, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, f, fail),
        call_timeout=_seconds(merged, "call_timeout", DEFAULT_CALL_TIMEOUT, f, fail),
    )


def _seconds(merged: dict, key: str, default: float, f, fail, minimum: float = 0.1) -> float:
    value = merged.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= 3600:
        fail(f(key), f"expected seconds, a number from {minimum:g} to 3600")
    return float(value)


def _path(value, field: str, base: Path, fail) -> Path:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        fail(field, "expected a file path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def single_node_fleet(config: Path) -> Fleet:
    """A fleet of one `local` node for `pacsdeck up` / `make run`, named after its AE title (else its folder)."""
    config = Path(config).expanduser().resolve()
    name = None
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        title = data.get("ae_title") if isinstance(data, dict) else None
        if isinstance(title, str) and _NAME.match(title.strip()):
            name = title.strip().lower()
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass  # the console shows why the node is down; naming it is not the place to fail
    if name is None:
        folder = re.sub(r"[^A-Za-z0-9._-]", "-", config.parent.name).strip(".-_") or "local"
        name = folder[:64] if _NAME.match(folder[:64]) else "local"
    entry = NodeEntry(
        name=name,
        site="",
        tags=(),
        transport=LOCAL,
        config=str(config),
        host=None,
        port=22,
        user=None,
        key=None,
        agent_command=DEFAULT_AGENT_COMMAND,
        poll_interval=DEFAULT_POLL_INTERVAL,
        connect_timeout=DEFAULT_CONNECT_TIMEOUT,
        call_timeout=DEFAULT_CALL_TIMEOUT,
    )
    return Fleet(nodes=(entry,), known_hosts=default_known_hosts(), source=None)

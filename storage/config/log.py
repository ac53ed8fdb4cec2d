"""The `log:` section of node.yaml: where logs.tail reads the node's log when it runs as a systemd unit."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .values import ConfigError

# systemd.unit(5): a unit name is at most 255 characters of ASCII letters, digits, ":", "-", "_", ".", "\",
# with "@" before an instance; only services write a node's log.
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service$")
# systemd.exec(5) LogNamespace=: the same rule as a unit name's prefix, short.
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class LogConfig:
    journal_unit: str | None = None  # read the journal of this unit (None: node.log, else the derived unit)
    journal_namespace: str | None = None  # the unit's LogNamespace= (journalctl --namespace), if it has one


def parse_log(raw) -> LogConfig:
    """The `log:` section; every key optional, each error naming its field."""
    if raw is None:
        return LogConfig()
    if not isinstance(raw, dict):
        raise ConfigError("log: must be a mapping, e.g. {journal_unit: pacsdeck-node@main.service}")
    known = {f.name for f in fields(LogConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"log: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    unit, namespace = raw.get("journal_unit"), raw.get("journal_namespace")
    if unit is not None and (not isinstance(unit, str) or len(unit) > 255 or not _UNIT.match(unit)):
        raise ConfigError(f"log.journal_unit: a systemd service name such as pacsdeck-node@main.service, got {unit!r}")
    if namespace is not None and (not isinstance(namespace, str) or not _NAMESPACE.match(namespace)):
        raise ConfigError(
            f"log.journal_namespace: letters, digits, '-' or '_' (a LogNamespace= name), got {namespace!r}"
        )
    return LogConfig(journal_unit=unit, journal_namespace=namespace)

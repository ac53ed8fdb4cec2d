"""The AE file of `fleet aets apply` (`aets: [{ae_title, host?, port?, ...}]`), read and checked once at the
edge into frozen AetDefinitions; AetsFileError names the entry and key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .yamlfile import read_yaml

# storage.config.values.OPERATIONS; the console may not import storage, and the agent checks again anyway.
OPERATIONS = ("store", "find", "move", "get")
FIELDS = ("host", "port", "description", "operations", "move_destination", "tls")
_ENTRY_KEYS = ("ae_title", *FIELDS)


class AetsFileError(ValueError):
    """A bad AE file: `field` names the entry and key (`aets[1].port`), the message says what to do."""

    def __init__(self, field: str, message: str, source: Path | None = None):
        self.field, self.message, self.source = field, message, source
        super().__init__(f"{source}: {field}: {message}" if source else f"{field}: {message}")


@dataclass(frozen=True)
class AetDefinition:
    """One AE of the file. A field left out (None) is left as it is on a node that already has the AE, and
    takes the agent's default on a node that gets it added."""

    ae_title: str
    host: str | None = None
    port: int | None = None
    description: str | None = None
    operations: tuple[str, ...] | None = None
    move_destination: bool | None = None
    tls: bool | None = None

    def given(self) -> dict:
        """The fields the file sets, as aets.add / aets.update take them."""
        out = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if name == "operations" else value
        return out


def load_aets_file(path: Path) -> tuple[AetDefinition, ...]:
    """Read and check the AE file (`aets: [{ae_title, host?, port?, ...}]`); AetsFileError names the field."""
    path = Path(path)
    data = read_yaml(path, AetsFileError, "file", f"no such file: {path}")
    try:
        return parse_aets(data)
    except AetsFileError as err:
        raise AetsFileError(err.field, err.message, path) from None


def parse_aets(data) -> tuple[AetDefinition, ...]:
    """Check an already-parsed AE document with aets.add's rules for keys, types and ranges, so a bad entry
    stops the roll-out before any node is asked; the agent still checks host syntax on each node."""
    if not isinstance(data, dict) or set(data) != {"aets"}:
        raise AetsFileError("file", "expected a mapping with one key, `aets:`, a list of AE titles")
    entries = data["aets"]
    if not isinstance(entries, list) or not entries:
        raise AetsFileError("aets", "expected a non-empty list of AE titles ({ae_title, host, port, ...})")
    out: list[AetDefinition] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(entries):
        where = f"aets[{i}]"
        if not isinstance(raw, dict):
            raise AetsFileError(where, "expected a mapping with at least `ae_title:`")
        for key in raw:
            if key not in _ENTRY_KEYS:
                raise AetsFileError(f"{where}.{key}", f"unknown key; expected one of {', '.join(_ENTRY_KEYS)}")
        aet = _definition(raw, where)
        if aet.ae_title in seen:
            raise AetsFileError(
                f"{where}.ae_title", f"{aet.ae_title!r} is already defined by aets[{seen[aet.ae_title]}]"
            )
        seen[aet.ae_title] = i
        out.append(aet)
    return tuple(out)


def _definition(raw: dict, where: str) -> AetDefinition:
    def fail(key: str, message: str):
        raise AetsFileError(f"{where}.{key}", message)

    title = raw.get("ae_title")
    if not isinstance(title, str):
        fail("ae_title", "required: 1-16 printable ASCII characters")
    if not title.isascii() or not title.isprintable() or "\\" in title:
        fail("ae_title", f"only printable ASCII without backslash: {title!r}")
    if not title.strip() or len(title.strip()) > 16:
        fail("ae_title", f"1-16 characters (PS3.5 VR AE), got {len(title.strip())}: {title.strip()!r}")
    host = raw.get("host")
    if host is not None and (
        not isinstance(host, str) or not host or len(host) > 253 or host.startswith("-") or not host.isprintable()
    ):
        fail("host", f"expected a host name or an IP address, got {host!r:.60}")
    port = raw.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        fail("port", f"expected a DICOM port, an integer 1-65535, got {port!r:.40}")
    description = raw.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > 256 or not description.isprintable()
    ):
        fail("description", "expected one line of text, at most 256 characters")
    operations = raw.get("operations")
    if operations is not None:
        if not isinstance(operations, list) or not operations:
            fail("operations", f"expected a non-empty list of {', '.join(OPERATIONS)}")
        for j, op in enumerate(operations):
            if op not in OPERATIONS:
                raise AetsFileError(
                    f"{where}.operations[{j}]", f"unknown operation {op!r}; use {', '.join(OPERATIONS)}"
                )
        operations = tuple(dict.fromkeys(operations))
    flags = {}
    for key in ("move_destination", "tls"):
        value = raw.get(key)
        if value is not None and not isinstance(value, bool):
            fail(key, f"expected true or false, got {value!r:.40}")
        flags[key] = value
    return AetDefinition(
        ae_title=title.strip(),
        host=host,
        port=port,
        description=description,
        operations=operations,
        **flags,
    )

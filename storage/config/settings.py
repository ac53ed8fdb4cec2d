"""Node configuration: node.yaml parsed once into frozen dataclasses, errors naming the field."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_PORT = 11112
DEFAULT_AE_TITLE = "PACSDECK"
OPERATIONS = ("store", "find", "move", "get")
DUPLICATE_POLICIES = ("keep", "overwrite")


class ConfigError(ValueError):
    """A node.yaml value is wrong; the message names the field (`pools[1].path: not writable`)."""


@dataclass(frozen=True)
class PoolConfig:
    name: str
    path: Path
    tier: str
    capacity: int | None = None  # logical bytes this pool may hold; None: the filesystem's size
    reserve_bytes: int = 0  # free space never used for new instances ...
    reserve_percent: float = 0.0  # ... or a share of the capacity (the larger of the two applies)
    high_watermark: float | None = None  # percent used that starts a migration to the next tier
    low_watermark: float | None = None  # percent used that migration brings the pool under


@dataclass(frozen=True)
class MigrationRule:
    """Move whole studies from one pool to another once they are `after_days` old."""

    source: str
    target: str
    after_days: float
    since: str = "last_access"  # or "received"


@dataclass(frozen=True)
class MigrationConfig:
    interval: float = 3600.0  # seconds between runs of the age rules (watermarks are watched continuously)
    rules: tuple[MigrationRule, ...] = ()
    recall_on_access: bool = False  # copy a study back to the first tier when it is retrieved


@dataclass(frozen=True)
class QueueConfig:
    """The job queue: how forwards are retried (exponential backoff) and run."""

    backoff_base: float = 10.0  # seconds before the 2nd attempt; doubled for each further one ...
    backoff_max: float = 600.0  # ... up to this
    max_attempts: int = 10  # then the job is failed, with the last error
    concurrency: int = 4  # associations open at once, over all destinations
    associations: int = 1  # per destination: more serve several studies to it in parallel
    timeout: float = 30.0  # seconds to connect, to be accepted, and for each C-STORE response


@dataclass(frozen=True)
class AETConfig:
    ae_title: str
    host: str | None = None
    port: int | None = None
    description: str = ""
    operations: tuple[str, ...] = OPERATIONS
    move_destination: bool = False
    tls: bool = False  # associations the node opens to this AE (C-MOVE, forwards, echo) use DICOM TLS


@dataclass(frozen=True)
class NodeConfig:
    path: Path  # the node.yaml this came from; relative paths inside it resolve against its folder
    ae_title: str = DEFAULT_AE_TITLE
    port: int = DEFAULT_PORT
    bind: str = "0.0.0.0"
    open_mode: bool = False
    require_called_aet: bool = True
    duplicates: str = "keep"
    max_pdu: int = 131072
    max_associations: int = 32
    index: Path = Path("index.sqlite")
    pools: tuple[PoolConfig, ...] = ()
    aets: tuple[AETConfig, ...] = ()
    log_level: str = "INFO"
    workers: int | str = "auto"
    query_limit: int = 1000  # C-FIND matches answered per request (0 = no limit)
    migration: MigrationConfig = MigrationConfig()
    metrics_port: int = 0  # Prometheus /metrics on 127.0.0.1 (0 = off)
    health: object = None  # storage.config.health.HealthConfig; None = the defaults
    queue: QueueConfig = QueueConfig()
    limits: object = None  # storage.config.limits.LimitsConfig; None = the defaults
    tls: object = None  # storage.dimse.tls.TLSConfig; None = plain TCP

    def worker_count(self) -> int:
        """Processes serving the port: `auto` is one per core, at most 4."""
        if self.workers == "auto":
            return max(1, min(os.cpu_count() or 1, 4))
        return int(self.workers)

    @property
    def node_dir(self) -> Path:
        return self.path.parent


# --- validators, each raising ConfigError that names the field ----------------------------------

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-:]*[A-Za-z0-9])?$")
_POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def validate_ae_title(value, where: str) -> str:
    """AE title rules from PS3.5 (VR AE): 1-16 chars, printable ASCII, no backslash, not all spaces."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {type(value).__name__}")
    if not value.isascii() or _AE_FORBIDDEN.search(value):
        raise ConfigError(f"{where}: only printable ASCII without backslash is allowed: {value!r}")
    stripped = value.strip()
    if not stripped:
        raise ConfigError(f"{where}: must not be empty")
    if len(stripped) > 16:
        raise ConfigError(f"{where}: at most 16 characters, got {len(stripped)}: {stripped!r}")
    return stripped


def validate_port(value, where: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer port number, got {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{where}: must be between {low} and 65535, got {value}")
    return value


def validate_host(value, where: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOST_RE.match(value):
        raise ConfigError(f"{where}: not a host name or IP address: {value!r}")
    return value


def validate_operations(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where}: must be a non-empty list of {', '.join(OPERATIONS)}")
    for i, op in enumerate(value):
        if op not in OPERATIONS:
            raise ConfigError(f"{where}[{i}]: unknown operation {op!r}; use {', '.join(OPERATIONS)}")
    return tuple(dict.fromkeys(value))


def _bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _check_pool_dir(path: Path, where: str, create: bool) -> None:
    """At init a pool folder must be creatable and writable. A running node starts even if one pool
    has gone read-only (it fails over to the next pool and health reports it), but not if one is missing."""
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{where}: cannot create {path}: {err.strerror}") from err
    if not path.is_dir():
        raise ConfigError(f"{where}: {path} is not a directory")
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: {path} is not writable")


def parse_aet(raw, where: str) -> AETConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with ae_title, host, port")
    unknown = set(raw) - {"ae_title", "host", "port", "description", "operations", "move_destination", "tls"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "ae_title" not in raw:
        raise ConfigError(f"{where}.ae_title: required")
    host = raw.get("host")
    port = raw.get("port")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 256 or "\n" in description:
        raise ConfigError(f"{where}.description: a single line of at most 256 characters")
    return AETConfig(
        ae_title=validate_ae_title(raw["ae_title"], f"{where}.ae_title"),
        host=None if host is None else validate_host(host, f"{where}.host"),
        port=None if port is None else validate_port(port, f"{where}.port"),
        description=description,
        operations=validate_operations(raw.get("operations", list(OPERATIONS)), f"{where}.operations"),
        move_destination=_bool(raw.get("move_destination", False), f"{where}.move_destination"),
        tls=_bool(raw.get("tls", False), f"{where}.tls"),
    )


_POOL_LIMIT_KEYS = ("capacity", "reserve", "high_watermark", "low_watermark")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value, where: str) -> int:
    """Bytes from an integer or a string like `500GB`, `1.5TiB`, `2MB` (decimal and binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: a size in bytes or like 500GB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return value
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"{where}: a size in bytes or like 500GB, 1.5TiB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def _percent(value, where: str) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: a percentage from 0 to 100, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigError(f"{where}: a percentage from 0 to 100, got {value!r}")
    return float(value)


def parse_pool_limits(raw: dict, where: str) -> dict:
    """capacity, reserve (bytes or %), high/low watermarks (%) of one pool, as PoolConfig fields."""
    out: dict = {}
    if raw.get("capacity") is not None:
        out["capacity"] = parse_size(raw["capacity"], f"{where}.capacity")
        if out["capacity"] == 0:
            raise ConfigError(f"{where}.capacity: must be above 0 (leave it out to use the whole filesystem)")
    reserve = raw.get("reserve")
    if reserve is not None:
        if isinstance(reserve, str) and reserve.strip().endswith("%"):
            out["reserve_percent"] = _percent(reserve, f"{where}.reserve")
        else:
            out["reserve_bytes"] = parse_size(reserve, f"{where}.reserve")
            if out.get("capacity") is not None and out["reserve_bytes"] >= out["capacity"]:
                raise ConfigError(f"{where}.reserve: {out['reserve_bytes']} bytes leaves nothing of the "
                                  f"capacity ({out['capacity']} bytes)")
    high, low = raw.get("high_watermark"), raw.get("low_watermark")
    if high is not None:
        out["high_watermark"] = _percent(high, f"{where}.high_watermark")
    if low is not None:
        out["low_watermark"] = _percent(low, f"{where}.low_watermark")
    if (high is None) != (low is None):
        missing = "low_watermark" if low is None else "high_watermark"
        raise ConfigError(f"{where}.{missing}: required when the other watermark is set")
    if high is not None and not out["low_watermark"] < out["high_watermark"]:
        raise ConfigError(f"{where}.low_watermark: must be below high_watermark "
                          f"({out['low_watermark']:g} >= {out['high_watermark']:g})")
    return out


def parse_duration(value, where: str) -> float:
    """Seconds from a number or a string like `30s`, `15m`, `1h`, `1d`."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: seconds or like 15m, 1h, 1d, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(value) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{where}: seconds or like 15m, 1h, 1d, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < 1:
        raise ConfigError(f"{where}: at least 1 second, got {value!r}")
    return seconds


def parse_migration(raw, pool_names: set[str]) -> MigrationConfig:
    """The `migration:` section: interval, recall_on_access and the age rules."""
    if raw is None:
        return MigrationConfig()
    if not isinstance(raw, dict):
        raise ConfigError("migration: must be a mapping with interval, rules, recall_on_access")
    unknown = set(raw) - {"interval", "rules", "recall_on_access"}
    if unknown:
        raise ConfigError(f"migration: unknown key(s) {', '.join(sorted(unknown))}")
    kw: dict = {}
    if "interval" in raw:
        kw["interval"] = parse_duration(raw["interval"], "migration.interval")
    if "recall_on_access" in raw:
        kw["recall_on_access"] = _bool(raw["recall_on_access"], "migration.recall_on_access")
    rules_raw = raw.get("rules") or []
    if not isinstance(rules_raw, list):
        raise ConfigError("migration.rules: must be a list of {from, to, after_days, since}")
    rules = []
    for i, rule in enumerate(rules_raw):
        where = f"migration.rules[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: must be a mapping with from, to, after_days")
        unknown = set(rule) - {"from", "to", "after_days", "since"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("from", "to"):
            if rule.get(key) not in pool_names:
                raise ConfigError(f"{where}.{key}: not a pool name: {rule.get(key)!r}; pools: "
                                  f"{', '.join(sorted(pool_names))}")
        if rule["from"] == rule["to"]:
            raise ConfigError(f"{where}.to: must differ from `from` ({rule['to']!r})")
        days = rule.get("after_days")
        if isinstance(days, bool) or not isinstance(days, (int, float)) or days < 0:
            raise ConfigError(f"{where}.after_days: a number of days (0 or more), got {days!r}")
        since = rule.get("since", "last_access")
        if since not in ("last_access", "received"):
            raise ConfigError(f"{where}.since: last_access or received, got {since!r}")
        rules.append(MigrationRule(source=rule["from"], target=rule["to"], after_days=float(days), since=since))
    kw["rules"] = tuple(rules)
    return MigrationConfig(**kw)


def _seconds(value, where: str, low: float, high: float) -> float:
    """Seconds as a number (fractions allowed, for tests) or a duration such as 30s, 5m."""
    seconds = parse_duration(value, where) if isinstance(value, str) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not low <= seconds <= high:
        raise ConfigError(f"{where}: seconds from {low:g} to {high:g} (or like 30s, 5m), got {value!r}")
    return float(seconds)


def parse_queue(raw) -> QueueConfig:
    """The `queue:` section: retry backoff, attempts, destinations at once, network timeout."""
    if raw is None:
        return QueueConfig()
    if not isinstance(raw, dict):
        raise ConfigError("queue: must be a mapping with backoff_base, backoff_max, max_attempts, concurrency, "
                          "associations, timeout")
    unknown = set(raw) - set(QueueConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"queue: unknown key(s) {', '.join(sorted(unknown))}")
    kw: dict = {}
    if "backoff_base" in raw:
        kw["backoff_base"] = _seconds(raw["backoff_base"], "queue.backoff_base", 0.05, 86400)
    if "backoff_max" in raw:
        kw["backoff_max"] = _seconds(raw["backoff_max"], "queue.backoff_max", 0.05, 7 * 86400)
    if "timeout" in raw:
        kw["timeout"] = _seconds(raw["timeout"], "queue.timeout", 1, 600)
    for key, high in (("max_attempts", 1000), ("concurrency", 64), ("associations", 8)):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise ConfigError(f"queue.{key}: an integer from 1 to {high}, got {v!r}")
            kw[key] = v
    cfg = QueueConfig(**kw)
    if cfg.backoff_max < cfg.backoff_base:
        raise ConfigError(f"queue.backoff_max: must not be below backoff_base ({cfg.backoff_max:g} < "
                          f"{cfg.backoff_base:g})")
    return cfg


def parse_config(data, path: Path, create_dirs: bool = False) -> NodeConfig:
    """Turn the YAML mapping into a NodeConfig; `create_dirs` makes missing pool folders (init)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    known = {f for f in NodeConfig.__dataclass_fields__ if f != "path"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    base = path.parent

    def resolve(p) -> Path:
        p = Path(os.path.expanduser(str(p)))
        return p if p.is_absolute() else base / p

    kw: dict = {}
    if "ae_title" in data:
        kw["ae_title"] = validate_ae_title(data["ae_title"], "ae_title")
    if "port" in data:
        kw["port"] = validate_port(data["port"], "port", allow_zero=False)
    if "bind" in data:
        kw["bind"] = validate_host(data["bind"], "bind")
    for key in ("open_mode", "require_called_aet"):
        if key in data:
            kw[key] = _bool(data[key], key)
    if "duplicates" in data:
        if data["duplicates"] not in DUPLICATE_POLICIES:
            raise ConfigError(f"duplicates: must be one of {', '.join(DUPLICATE_POLICIES)}, got {data['duplicates']!r}")
        kw["duplicates"] = data["duplicates"]
    if "max_pdu" in data:
        v = data["max_pdu"]
        if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= 2**32 - 1) or 0 < v < 4096:
            raise ConfigError(f"max_pdu: 0 (unlimited) or 4096..4294967295 bytes, got {v!r}")
        kw["max_pdu"] = v
    if "max_associations" in data:
        v = data["max_associations"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
            raise ConfigError(f"max_associations: an integer from 1 to 1000, got {v!r}")
        kw["max_associations"] = v
    if "workers" in data:
        v = data["workers"]
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64):
            raise ConfigError(f"workers: auto or an integer from 1 to 64, got {v!r}")
        kw["workers"] = v
    if "query_limit" in data:
        v = data["query_limit"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
            raise ConfigError(f"query_limit: 0 (no limit) or a number of matches up to 1000000, got {v!r}")
        kw["query_limit"] = v
    if "log_level" in data:
        if data["log_level"] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level: DEBUG, INFO, WARNING or ERROR, got {data['log_level']!r}")
        kw["log_level"] = data["log_level"]
    if "index" in data:
        if not isinstance(data["index"], str) or not data["index"]:
            raise ConfigError("index: must be a file path")
        kw["index"] = resolve(data["index"])
    else:
        kw["index"] = base / "index.sqlite"

    pools_raw = data.get("pools")
    if not isinstance(pools_raw, list) or not pools_raw:
        raise ConfigError("pools: must be a non-empty list of {name, path, tier}")
    pools, names, paths = [], set(), set()
    for i, raw in enumerate(pools_raw):
        where = f"pools[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a mapping with name, path, tier")
        unknown = set(raw) - {"name", "path", "tier", *_POOL_LIMIT_KEYS}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = raw.get("name")
        if not isinstance(name, str) or not _POOL_NAME_RE.match(name):
            raise ConfigError(f"{where}.name: lowercase letters, digits, '-' or '_', starting with a letter: {name!r}")
        if name in names:
            raise ConfigError(f"{where}.name: duplicate pool name {name!r}")
        if not isinstance(raw.get("path"), str) or not raw["path"]:
            raise ConfigError(f"{where}.path: required")
        ppath = resolve(raw["path"]).resolve()
        if ppath in paths:
            raise ConfigError(f"{where}.path: {ppath} is already used by another pool")
        _check_pool_dir(ppath, f"{where}.path", create_dirs)
        tier = raw.get("tier", name)
        if not isinstance(tier, str) or not _POOL_NAME_RE.match(tier):
            raise ConfigError(f"{where}.tier: a short lowercase name such as primary or archive: {tier!r}")
        names.add(name)
        paths.add(ppath)
        pools.append(PoolConfig(name=name, path=ppath, tier=tier, **parse_pool_limits(raw, where)))
    kw["pools"] = tuple(pools)
    if "migration" in data:
        kw["migration"] = parse_migration(data["migration"], names)
    if "queue" in data:
        kw["queue"] = parse_queue(data["queue"])
    if "metrics_port" in data:
        kw["metrics_port"] = validate_port(data["metrics_port"], "metrics_port", allow_zero=True)
    if "health" in data:
        from .health import parse_health  # it imports ConfigError from here

        kw["health"] = parse_health(data["health"])
    from .limits import parse_limits  # it imports ConfigError from here

    kw["limits"] = parse_limits(data.get("limits"))
    from storage.dimse.tls import parse_tls  # it imports ConfigError from here

    kw["tls"] = parse_tls(data.get("tls"), base)

    aets_raw = data.get("aets", [])
    if not isinstance(aets_raw, list):
        raise ConfigError("aets: must be a list")
    aets, titles = [], set()
    for i, raw in enumerate(aets_raw):
        aet = parse_aet(raw, f"aets[{i}]")
        if aet.ae_title in titles:
            raise ConfigError(f"aets[{i}].ae_title: duplicate {aet.ae_title!r}")
        titles.add(aet.ae_title)
        aets.append(aet)
    kw["aets"] = tuple(aets)
    return NodeConfig(path=path, **kw)


def load_config(path: str | os.PathLike, create_dirs: bool = False) -> NodeConfig:
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with `pacsdeck node init --dir DIR`)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_config(data, path, create_dirs=create_dirs)


def default_config_text(ae_title: str, port: int) -> str:
    """The node.yaml that `pacsdeck node init` writes: every setting shown with its default."""
    return f"""\
# pacsdeck node configuration. Paths are relative to this file's folder.
ae_title: {ae_title}            # our AE title (1-16 printable ASCII characters)
port: {port}                    # DICOM port
bind: 0.0.0.0                  # address to listen on
require_called_aet: true       # reject associations not addressed to our AE title
open_mode: false               # true: accept any calling AE title (unregistered senders)
duplicates: keep               # same SOPInstanceUID again: keep (first copy wins) or overwrite
max_pdu: 131072                # maximum PDU we receive, bytes (0 = unlimited)
max_associations: 32           # per worker process
workers: auto                  # processes sharing the port (auto: one per core, at most 4)
query_limit: 1000              # C-FIND matches per query; more are cut with status 0xFE00 (0 = no limit)
limits:                        # what a peer may cost the node (see README, Security); defaults shown
  max_pending: 256             # connections per worker still negotiating; past this the oldest idle is closed
  max_associations_per_ae: 16  # per calling AE title, per worker (0 = no limit)
  max_associations_per_host: 0 # per peer address, per worker (0 = no limit)
  request_timeout: 10s         # connect to a whole A-ASSOCIATE-RQ
  pdu_timeout: 30s             # a PDU that has begun must arrive whole within this
  idle_timeout: 60s            # no PDU for this long: the association is aborted
  max_instance_size: 2GiB      # one received dataset (a Deflated one counted inflated)
  max_sequence_depth: 32       # sequences nested deeper are refused
# tls:                         # DICOM TLS on the listener (see README, Security); files: owner-only writable
#   certificate: tls/node.pem    # PEM certificate (and chain)
#   private_key: tls/node.key    # PEM key, chmod 600
#   ca_certificates: tls/ca.pem  # CA that client certificates must chain to
#   require_client_certificate: false   # true: mutual TLS, peers without a certificate from the CA are refused
#   listen: true               # false: plain listener; the files serve only AEs registered with tls: true
metrics_port: 0                # Prometheus /metrics, /healthz, /readyz on 127.0.0.1:PORT (0 = off)
# health:                      # thresholds of health.check / `pacsdeck node check` (defaults shown)
#   disk_percent: {{warn: 85, crit: 95}}
#   fsync_ms: {{warn: 100, crit: 1000}}
#   forecast_days: {{warn: 30, crit: 7}}   # days until a pool is full, from the last 7 days of ingest
#   forecast_window_days: 7
index: index.sqlite
pools:                         # ordered by tier: new instances go to the first pool with room
  - name: primary
    path: pools/primary
    tier: primary
    # capacity: 500GB            # logical size (bytes, or 500GB / 2TiB); default: the filesystem
    reserve: 5%                  # free space never used for new instances (bytes or % of capacity)
    high_watermark: 90           # % used: move least-recently-accessed studies to the next tier ...
    low_watermark: 80            # ... until the pool is under this
  - name: archive
    path: pools/archive
    tier: archive
    reserve: 2%
migration:
  interval: 1h                 # how often the age rules run (30s, 15m, 1h, 1d); watermarks act at once
  recall_on_access: false      # copy a study back to the first tier when it is retrieved
  rules: []                    # age rules, applied in order, e.g.
#    - from: primary
#      to: archive
#      after_days: 90
#      since: last_access       # or received
queue:                         # forwards (routes.*, studies.send): retried with exponential backoff
  backoff_base: 10s            # wait before the 2nd attempt, doubled for each further one ...
  backoff_max: 10m             # ... up to this
  max_attempts: 10             # then the job fails with its last error (queue.retry starts it again)
  concurrency: 4               # associations open at once, over all destinations
  associations: 1              # per destination (more: several studies to it in parallel)
  timeout: 30s                 # connect, association and each C-STORE response
# AE titles imported into the index at init; manage them later with the agent (aets.*)
aets: []
#  - ae_title: CT1
#    host: 10.0.0.20
#    port: 104
#    operations: [store, find, move, get]
#    move_destination: true
#    tls: false                # true: the node's associations to this AE (C-MOVE, forwards, echo) use TLS
"""

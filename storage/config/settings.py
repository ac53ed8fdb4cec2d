"""Node configuration: node.yaml parsed once into frozen dataclasses, errors naming the field."""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .backups import parse_backups
from .health import parse_health
from .limits import parse_limits
from .log import LogConfig, parse_log
from .tls import parse_tls
from .values import (
    OPERATIONS,
    ConfigError,
    parse_bool,
    parse_duration,
    parse_percent,
    parse_seconds,
    parse_size,
    validate_ae_title,
    validate_host,
    validate_operations,
    validate_port,
)

DEFAULT_PORT = 11112
DEFAULT_AE_TITLE = "PACSDECK"
DUPLICATE_POLICIES = ("keep", "overwrite")


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
    tls: object = None  # storage.config.tls.TLSConfig; None = plain TCP
    log: LogConfig = field(default_factory=LogConfig)  # where logs.tail reads the log of a node run as a systemd unit
    backups: tuple = ()  # storage.config.backups.BackupTarget, by name

    def backup_target(self, name: str | None):
        """The named target, or the first one when no name is given; None when there is none of that name."""
        if name is None:
            return self.backups[0] if self.backups else None
        return next((t for t in self.backups if t.name == name), None)

    def worker_count(self) -> int:
        """Processes serving the port: `auto` is one per core, at most 4."""
        if self.workers == "auto":
            return max(1, min(os.cpu_count() or 1, 4))
        return int(self.workers)

    @property
    def node_dir(self) -> Path:
        return self.path.parent


_POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


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
        move_destination=parse_bool(raw.get("move_destination", False), f"{where}.move_destination"),
        tls=parse_bool(raw.get("tls", False), f"{where}.tls"),
    )


_POOL_LIMIT_KEYS = ("capacity", "reserve", "high_watermark", "low_watermark")


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
            out["reserve_percent"] = parse_percent(reserve, f"{where}.reserve")
        else:
            out["reserve_bytes"] = parse_size(reserve, f"{where}.reserve")
            if out.get("capacity") is not None and out["reserve_bytes"] >= out["capacity"]:
                raise ConfigError(
                    f"{where}.reserve: {out['reserve_bytes']} bytes leaves nothing of the "
                    f"capacity ({out['capacity']} bytes)"
                )
    high, low = raw.get("high_watermark"), raw.get("low_watermark")
    if high is not None:
        out["high_watermark"] = parse_percent(high, f"{where}.high_watermark")
    if low is not None:
        out["low_watermark"] = parse_percent(low, f"{where}.low_watermark")
    if (high is None) != (low is None):
        missing = "low_watermark" if low is None else "high_watermark"
        raise ConfigError(f"{where}.{missing}: required when the other watermark is set")
    if high is not None and not out["low_watermark"] < out["high_watermark"]:
        raise ConfigError(
            f"{where}.low_watermark: must be below high_watermark "
            f"({out['low_watermark']:g} >= {out['high_watermark']:g})"
        )
    return out


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
        kw["recall_on_access"] = parse_bool(raw["recall_on_access"], "migration.recall_on_access")
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
                raise ConfigError(
                    f"{where}.{key}: not a pool name: {rule.get(key)!r}; pools: {', '.join(sorted(pool_names))}"
                )
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


def parse_queue(raw) -> QueueConfig:
    """The `queue:` section: retry backoff, attempts, destinations at once, network timeout."""
    if raw is None:
        return QueueConfig()
    if not isinstance(raw, dict):
        raise ConfigError(
            "queue: must be a mapping with backoff_base, backoff_max, max_attempts, concurrency, associations, timeout"
        )
    unknown = set(raw) - set(QueueConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"queue: unknown key(s) {', '.join(sorted(unknown))}")
    kw: dict = {}
    if "backoff_base" in raw:
        kw["backoff_base"] = parse_seconds(raw["backoff_base"], "queue.backoff_base", 0.05, 86400)
    if "backoff_max" in raw:
        kw["backoff_max"] = parse_seconds(raw["backoff_max"], "queue.backoff_max", 0.05, 7 * 86400)
    if "timeout" in raw:
        kw["timeout"] = parse_seconds(raw["timeout"], "queue.timeout", 1, 600)
    for key, high in (("max_attempts", 1000), ("concurrency", 64), ("associations", 8)):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise ConfigError(f"queue.{key}: an integer from 1 to {high}, got {v!r}")
            kw[key] = v
    cfg = QueueConfig(**kw)
    if cfg.backoff_max < cfg.backoff_base:
        raise ConfigError(
            f"queue.backoff_max: must not be below backoff_base ({cfg.backoff_max:g} < {cfg.backoff_base:g})"
        )
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
            kw[key] = parse_bool(data[key], key)
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
        kw["health"] = parse_health(data["health"])

    kw["limits"] = parse_limits(data.get("limits"))

    kw["tls"] = parse_tls(data.get("tls"), base)
    kw["log"] = parse_log(data.get("log"))
    kw["backups"] = parse_backups(data.get("backups"), resolve)

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
    """The node.yaml that `pacsdeck node init` writes (template.yaml): every setting shown with its default."""
    template = (Path(__file__).parent / "template.yaml").read_text(encoding="utf-8")
    return string.Template(template).substitute(ae_title=ae_title, port=port)

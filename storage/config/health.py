"""Health thresholds: the `health:` section of node.yaml, parsed into warn/crit pairs naming the field."""

from __future__ import annotations

from dataclasses import dataclass, field

from .values import ConfigError


@dataclass(frozen=True)
class Threshold:
    """warn and crit levels; `lower_is_worse` for figures such as days until a pool is full."""

    warn: float
    crit: float
    lower_is_worse: bool = False

    def status(self, value: float) -> str:
        if self.lower_is_worse:
            return "crit" if value <= self.crit else "warn" if value <= self.warn else "ok"
        return "crit" if value >= self.crit else "warn" if value >= self.warn else "ok"

    def describe(self, unit: str = "") -> str:
        op = "<=" if self.lower_is_worse else ">="
        return f"warn {op} {self.warn:g}{unit}, crit {op} {self.crit:g}{unit}"


# name -> default levels. Every name here may be overridden under `health:` in node.yaml.
DEFAULTS: dict[str, Threshold] = {
    "load_per_cpu": Threshold(2.0, 4.0),  # 5-minute load average divided by the CPU count
    "memory_percent": Threshold(90, 97),  # used, i.e. not available to new allocations
    "swap_percent": Threshold(50, 90),
    "disk_percent": Threshold(85, 95),  # filesystem holding a pool, used
    "inodes_percent": Threshold(85, 95),
    "fsync_ms": Threshold(100, 1000),  # write 4 KiB + fsync + unlink in a pool
    "forecast_days": Threshold(30, 7, lower_is_worse=True),  # days until a pool has no room left
    "clock_offset_s": Threshold(0.5, 5.0),
    "node_rss_mb": Threshold(4096, 8192),  # supervisor plus workers
    "backup_age_hours": Threshold(26, 72),
    "queue_backlog": Threshold(100, 1000),  # jobs not finished
    "queue_oldest_hours": Threshold(6, 24),
}
# How many days of ingest the free-space forecast extrapolates from.
DEFAULT_FORECAST_WINDOW_DAYS = 7.0


@dataclass(frozen=True)
class HealthConfig:
    thresholds: dict = field(default_factory=lambda: dict(DEFAULTS))
    forecast_window_days: float = DEFAULT_FORECAST_WINDOW_DAYS

    def __getitem__(self, name: str) -> Threshold:
        return self.thresholds[name]


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: a number (0 or more), got {value!r}")
    return float(value)


def parse_health(raw) -> HealthConfig:
    """`health: {disk_percent: {warn: 80, crit: 90}, forecast_window_days: 14, ...}`."""
    if raw is None:
        return HealthConfig()
    if not isinstance(raw, dict):
        raise ConfigError("health: must be a mapping of check names to {warn, crit}")
    known = set(DEFAULTS) | {"forecast_window_days"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"health: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    thresholds = dict(DEFAULTS)
    window = DEFAULT_FORECAST_WINDOW_DAYS
    for name, value in raw.items():
        where = f"health.{name}"
        if name == "forecast_window_days":
            window = _number(value, where)
            if not 1 <= window <= 365:
                raise ConfigError(f"{where}: from 1 to 365 days, got {value!r}")
            continue
        default = DEFAULTS[name]
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping with warn and crit")
        extra = set(value) - {"warn", "crit"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; use warn and crit")
        warn = _number(value.get("warn", default.warn), f"{where}.warn")
        crit = _number(value.get("crit", default.crit), f"{where}.crit")
        if default.lower_is_worse and not crit < warn:
            raise ConfigError(
                f"{where}.crit: must be below warn (lower is worse here), got warn {warn:g} crit {crit:g}"
            )
        if not default.lower_is_worse and not warn < crit:
            raise ConfigError(f"{where}.warn: must be below crit, got warn {warn:g} crit {crit:g}")
        thresholds[name] = Threshold(warn, crit, default.lower_is_worse)
    return HealthConfig(thresholds=thresholds, forecast_window_days=window)


def health_config(node_config) -> HealthConfig:
    """The node's thresholds: node.yaml's `health:` section, or the defaults."""
    return node_config.health if node_config.health is not None else HealthConfig()

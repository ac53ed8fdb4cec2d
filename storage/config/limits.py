"""Listener limits: the `limits:` section of node.yaml, what a peer may cost the node before and after it is known."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .values import ConfigError, parse_seconds, parse_size


@dataclass(frozen=True)
class LimitsConfig:
    """Each limit is enforced where the bytes arrive (storage/dimse/guard.py); the README's Security section says
    what each one defends."""

    # Connections per worker that have not sent their A-ASSOCIATE-RQ; past this the oldest idle one is closed.
    # Room for a few hundred: under a connect flood on a loaded machine a real peer's request can take
    # a while to be read, and 64 let 1 echo in 8 be evicted (tests/test_listener_limits.py, in CI).
    max_pending: int = 256
    max_associations_per_ae: int = 16  # associations per calling AE title, per worker (0 = no limit)
    max_associations_per_host: int = 0  # associations per peer address, per worker (0 = no limit)
    request_timeout: float = 10.0  # seconds from connect until the whole A-ASSOCIATE-RQ has arrived
    pdu_timeout: float = 30.0  # seconds for a PDU that has begun to arrive whole
    idle_timeout: float = 60.0  # seconds without a PDU before an association is aborted
    max_instance_size: int = 2 * 1024**3  # bytes of one received dataset (and of a Deflated one, inflated)
    max_sequence_depth: int = 32  # nesting of sequences in a received dataset


_INTEGERS = {
    "max_pending": (1, 10_000),
    "max_associations_per_ae": (0, 1000),
    "max_associations_per_host": (0, 1000),
    "max_sequence_depth": (1, 1000),
}
_DURATIONS = {"request_timeout": (1, 600), "pdu_timeout": (1, 3600), "idle_timeout": (1, 86400)}


def parse_limits(raw) -> LimitsConfig:
    """The `limits:` section; every key optional, each error naming its field."""
    if raw is None:
        return LimitsConfig()
    if not isinstance(raw, dict):
        raise ConfigError("limits: must be a mapping, e.g. {max_pending: 256, request_timeout: 10s}")
    known = {f.name for f in fields(LimitsConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"limits: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    kw: dict = {}
    for key, (low, high) in _INTEGERS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(f"limits.{key}: an integer from {low} to {high}, got {v!r}")
            kw[key] = v
    for key, (low, high) in _DURATIONS.items():
        if key in raw:
            kw[key] = parse_seconds(raw[key], f"limits.{key}", low, high)
    if "max_instance_size" in raw:
        size = parse_size(raw["max_instance_size"], "limits.max_instance_size")
        if size < 1024 * 1024:
            raise ConfigError(f"limits.max_instance_size: at least 1MiB, got {raw['max_instance_size']!r}")
        kw["max_instance_size"] = size
    return LimitsConfig(**kw)

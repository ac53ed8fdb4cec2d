"""Named read and write queries the agent calls; typed results, so the agent writes no SQL of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Generic, TypeVar

from . import query as q
from . import routes as route_rules
from .database import Index

T = TypeVar("T")

# What runs inside a write's transaction after the rows changed (e.g. authorized_keys rewritten):
# if it raises, the change is rolled back with it.
Then = Callable[[], None] | None


# --- errors the agent maps to its error kinds ------------------------------------------------------


class CatalogError(Exception):
    """A named query refused a write; `name` is what it was about (an AE title, a user, a route)."""

    def __init__(self, name: str, position: int | None = None):
        super().__init__(name)
        self.name = name
        self.position = position  # the item's place in a list parameter (routes.add destinations)


class Exists(CatalogError):
    """One of that name exists already."""


class Missing(CatalogError):
    """Nothing of that name exists."""


class NoAddress(CatalogError):
    """The registered AE has no host or no port, so nothing can be sent to it."""


class InUse(CatalogError):
    """The AE title is a destination of routes; removing it would fail every forward to it."""

    def __init__(self, name: str, routes: list[str]):
        super().__init__(name)
        self.routes = routes


class LastAdmin(CatalogError):
    """The change would leave no admin."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """At most `limit` rows, and whether more matched."""

    items: list[T]
    truncated: bool


def _page(rows: list, limit: int, make: Callable) -> Page:
    return Page([make(r) for r in rows[:limit]], len(rows) > limit)


# --- registered AE titles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AetFields:
    """What aets.add sets and aets.update changes."""

    host: str | None
    port: int | None
    description: str
    operations: tuple[str, ...]
    move_destination: bool
    tls: bool


@dataclass(frozen=True)
class Aet(AetFields):
    ae_title: str
    created_at: float
    updated_at: float

    @property
    def addressed(self) -> bool:
        """It has a host and a port: we can call it (C-ECHO, C-MOVE destination, forwards)."""
        return bool(self.host) and bool(self.port)


def _aet(d: dict) -> Aet:
    return Aet(
        ae_title=d["ae_title"],
        host=d["host"],
        port=d["port"],
        description=d["description"],
        operations=tuple(d["operations"]),
        move_destination=d["move_destination"],
        tls=d["tls"],
        created_at=d["created_at"],
        updated_at=d["updated_at"],
    )


def aets(index: Index) -> list[Aet]:
    return [_aet(d) for d in index.aets()]


def aet(index: Index, ae_title: str) -> Aet | None:
    found = index.aet(ae_title)
    return _aet(found) if found else None


def count_aets(index: Index) -> int:
    return index.connection().execute("SELECT count(*) FROM aets").fetchone()[0]


def _put_aet(index: Index, conn, ae_title: str, f: AetFields) -> None:
    index.put_aet(conn, ae_title, **{x.name: getattr(f, x.name) for x in fields(AetFields)})


def add_aet(index: Index, ae_title: str, new: AetFields) -> Aet:
    """Register an AE title; Exists if it is registered (checked and inserted in one transaction)."""
    with index.transaction() as conn:
        if index.aet(ae_title) is not None:
            raise Exists(ae_title)
        _put_aet(index, conn, ae_title, new)
    return aet(index, ae_title)


def update_aet(index: Index, ae_title: str, **changes) -> Aet:
    """Change some AetFields of a registered AE title; Missing if it is not registered."""
    with index.transaction() as conn:
        current = aet(index, ae_title)
        if current is None:
            raise Missing(ae_title)
        merged = replace(AetFields(**{x.name: getattr(current, x.name) for x in fields(AetFields)}), **changes)
        _put_aet(index, conn, ae_title, merged)
    return aet(index, ae_title)


def remove_aet(index: Index, ae_title: str) -> None:
    """InUse while a route forwards to it; Missing if it is not registered."""
    with index.transaction() as conn:
        used_by = route_rules.using(conn, ae_title)
        if used_by:
            raise InUse(ae_title, used_by)
        if not index.remove_aet(conn, ae_title):
            raise Missing(ae_title)


# --- routes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRecord:
    name: str
    match: Mapping[str, str]
    destinations: tuple[str, ...]
    created_at: float
    updated_at: float


def routes(index: Index) -> list[RouteRecord]:
    return [
        RouteRecord(r["name"], r["match"], tuple(r["destinations"]), r["created_at"], r["updated_at"])
        for r in route_rules.load(index.connection())
    ]


def add_route(index: Index, name: str, match: dict, destinations: list[str]) -> RouteRecord:
    """Missing/NoAddress (with the destination's position) unless each destination can be sent to;
    Exists if the name is taken. One transaction: no destination is removed between check and insert."""
    with index.transaction() as conn:
        for i, title in enumerate(destinations):
            found = aet(index, title)
            if found is None:
                raise Missing(title, i)
            if not found.addressed:
                raise NoAddress(title, i)
        if not route_rules.put(conn, name, match, destinations):
            raise Exists(name)
    return next(r for r in routes(index) if r.name == name)


def remove_route(index: Index, name: str) -> None:
    with index.transaction() as conn:
        if not route_rules.remove(conn, name):
            raise Missing(name)


# --- studies, series, instances ------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFilter:
    """studies.find's keys, already validated; None matches everything. Patterns may hold * and ?."""

    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    study_uid: str | None = None
    date_range: tuple[str | None, str | None] | None = None  # inclusive YYYYMMDD bounds
    modalities: tuple[str, ...] | None = None  # any of them in any series


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    modalities: tuple[str, ...]
    series: int
    instances: int
    bytes: int


@dataclass(frozen=True)
class SeriesSummary:
    series_uid: str
    study_uid: str
    modality: str
    series_number: str
    series_description: str
    body_part: str
    instances: int
    bytes: int


@dataclass(frozen=True)
class InstanceSummary:
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    pool: str
    size: int
    sha256: str
    received_at: float
    source_ae: str


def find_studies(index: Index, f: StudyFilter, limit: int) -> Page[StudySummary]:
    """Studies matching every key of `f` (C-FIND style), newest first."""
    where, args = [], []
    for column, value in (
        ("s.patient_name", f.patient_name),
        ("s.patient_id", f.patient_id),
        ("s.accession_number", f.accession_number),
    ):
        if value is not None:
            clause, values = q.match_clause(column, value)
            where.append(clause)
            args += values
    if f.study_uid is not None:
        where.append("s.study_uid = ?")
        args.append(f.study_uid)
    ranges = [q.key_range_clause("s.date_key", *f.date_range)] if f.date_range else []
    kinds = [q.modalities_clause(list(f.modalities))] if f.modalities else []
    for clause, values in ranges + kinds:
        where.append(clause)
        args += values
    rows = (
        index.connection()
        .execute(
            "SELECT s.study_uid, s.patient_name, s.patient_id, s.study_date, s.study_time, s.accession_number,"
            f" s.study_id, s.study_description, {q.STUDY_MODALITIES}, {q.STUDY_SERIES}, {q.STUDY_INSTANCES},"
            f" {q.STUDY_BYTES} FROM studies s"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY s.date_key DESC, s.time_key DESC, s.study_uid LIMIT ?",
            (*args, limit + 1),
        )
        .fetchall()
    )
    return _page(
        rows, limit, lambda r: StudySummary(*r[:8], tuple(sorted(m for m in (r[8] or "").split(",") if m)), *r[9:])
    )


def series_of(index: Index, study_uid: str, limit: int) -> Page[SeriesSummary] | None:
    """The study's series by number; None if the study is not in the index."""
    conn = index.connection()
    if conn.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT x.series_uid, x.study_uid, x.modality, x.series_number, x.series_description, x.body_part,"
        f" {q.SERIES_INSTANCES}, {q.SERIES_BYTES} FROM series x WHERE x.study_uid = ?"
        " ORDER BY CAST(x.series_number AS INTEGER), x.series_uid LIMIT ?",
        (study_uid, limit + 1),
    ).fetchall()
    return _page(rows, limit, lambda r: SeriesSummary(*r))


def instances_of(index: Index, series_uid: str, limit: int) -> Page[InstanceSummary] | None:
    """The series' instances by number; None if the series is not in the index."""
    conn = index.connection()
    if conn.execute("SELECT 1 FROM series WHERE series_uid=?", (series_uid,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT sop_uid, sop_class_uid, instance_number, transfer_syntax, pool, size, sha256, received_at,"
        " source_ae FROM instances WHERE series_uid = ? ORDER BY CAST(instance_number AS INTEGER), sop_uid"
        " LIMIT ?",
        (series_uid, limit + 1),
    ).fetchall()
    return _page(rows, limit, lambda r: InstanceSummary(*r))

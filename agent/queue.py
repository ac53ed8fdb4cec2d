"""queue.list, queue.retry, queue.cancel: the node's jobs (forwards, migrations, verifications) and their retries."""

from __future__ import annotations

from storage.index import catalog_activity, jobs
from storage.index.queue import KINDS, QueueError, cancel, retry

from . import validate as v
from .protocol import RPCError, iso_time
from .registry import Method, Param
from .schema import INT, NUM, STR, TIME, Arr, Null, Obj


def _job(job: catalog_activity.Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "next_attempt_at": iso_time(job.next_attempt_at) if job.state == jobs.PENDING else None,
        "last_error": job.last_error,
        "destination": job.destination,
        "study_uid": job.study_uid,
        "items_done": job.instances_done,
        "items_total": job.instances_total,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "reason": job.reason,
        "created_at": iso_time(job.created_at),
        "updated_at": iso_time(job.updated_at),
    }


def _choice(value, field: str, choices: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in choices:
        raise v.invalid(field, f"one of {', '.join(choices)}")
    return value


def _job_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62:
        raise v.invalid("id", "a job id (a positive integer) from queue.list")
    return value


def _translate(err: QueueError) -> RPCError:
    return RPCError(err.kind, str(err), {"field": err.field})


def list_queue(ctx, params: dict) -> dict:
    node = ctx.require_node()
    found = catalog_activity.list_jobs(
        node.index,
        state=_choice(params.get("state"), "state", jobs.STATES),
        kind=_choice(params.get("kind"), "kind", KINDS),
        destination=v.ae_title(params["destination"], "destination") if params.get("destination") is not None else None,
        limit=v.limit(params.get("limit")),
    )
    return {
        "jobs": [_job(j) for j in found.jobs],
        "counts": dict(found.counts),
        "oldest_pending_age_s": found.oldest_pending_age_s,
    }


def retry_jobs(ctx, params: dict) -> dict:
    node = ctx.require_node()
    if params.get("id") is not None:
        if params.get("destination") is not None or params.get("state") is not None:
            raise v.invalid("id", 'give either id, or destination with state "failed"')
        job_id = _job_id(params["id"])
        try:
            return {"retried": retry(node.index, job_id=job_id)}
        except QueueError as err:
            raise _translate(err) from None
    if params.get("destination") is None:
        raise v.invalid("id", 'give a job id, or destination with state "failed" (every failed forward to it)')
    destination = v.ae_title(params["destination"], "destination")
    if params.get("state") != jobs.FAILED:
        raise v.invalid("state", 'must be "failed": retrying by destination restarts its failed jobs')
    return {"retried": retry(node.index, destination=destination)}


def cancel_job(ctx, params: dict) -> dict:
    node = ctx.require_node()
    try:
        return {"cancelled": cancel(node.index, _job_id(params.get("id")))}
    except QueueError as err:
        raise _translate(err) from None


JOB = Obj(
    {
        "id": INT,
        "kind": STR,
        "state": STR,
        "attempts": INT,
        "max_attempts": INT,
        "next_attempt_at": Null(TIME),
        "last_error": Null(STR),
        "destination": Null(STR),
        "study_uid": Null(STR),
        "items_done": INT,
        "items_total": INT,
        "bytes_done": INT,
        "bytes_total": INT,
        "reason": STR,
        "created_at": TIME,
        "updated_at": TIME,
    }
)
# counts: every state in jobs.STATES, and any other state found in the table.
LIST = Obj(
    {"jobs": Arr(JOB), "counts": Obj(dict.fromkeys(jobs.STATES, INT), extra=INT), "oldest_pending_age_s": Null(NUM)}
)

_ID = Param("integer", "a job id from queue.list")
METHODS = (
    Method(
        "queue.list",
        list_queue,
        "Jobs newest first, counts by state, age of the oldest pending job",
        {
            "state": Param("string", "only jobs in this state", extra={"enum": list(jobs.STATES)}),
            "kind": Param("string", "only jobs of this kind", extra={"enum": list(KINDS)}),
            "destination": Param("string", "only forwards to this AE title"),
            "limit": Param("integer", "at most this many jobs (1-1000, default 100)"),
        },
        result=LIST,
    ),
    Method(
        "queue.retry",
        retry_jobs,
        "Run a job again now, or every failed forward to a destination",
        {
            "id": _ID,
            "destination": Param("string", 'with state "failed": every failed forward to this AE title'),
            "state": Param("string", '"failed" (with destination)', extra={"enum": [jobs.FAILED]}),
        },
        audit=True,
        result=Obj({"retried": INT}),
    ),
    Method(
        "queue.cancel",
        cancel_job,
        "Cancel a forward job; a running one stops at its next instance",
        {
            "id": Param("integer", "a job id from queue.list", required=True),
        },
        audit=True,
        result=Obj({"cancelled": INT}),
    ),
)

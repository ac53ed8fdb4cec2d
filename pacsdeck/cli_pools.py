"""`pacsdeck node pools|migrate|verify`: the agent's pools.* methods in this process, as tables."""

from __future__ import annotations

import shlex

from console.widgets.format import size as _size

from .cli_common import AS_HELP, CONFIG_HELP, EXIT_FAILURE, EXIT_OK, JSON_HELP, call_agent, emit


def cmd_node_pools(args) -> int:
    stats = call_agent(args, "pools.list", {})
    # What the pool holds first; the filesystem's own figures apart, as other data may share it (issue 17).
    lines = [
        f"{'pool':<12} {'tier':<10} {'instances':>9} {'holds':>11} {'capacity':>11} {'%':>6}  "
        f"{'fs used':>11} {'fs free':>11} {'fs size':>11}  state"
    ]
    for p in stats["pools"]:
        state = p.get("error") or (
            "above high watermark" if p.get("above_high_watermark") else "accepting" if p["accepting"] else "full"
        )
        capacity = _size(p.get("capacity")) if p.get("capacity_is_logical") else "filesystem"
        lines.append(
            f"{p['name']:<12} {p['tier']:<10} {p['instances']:>9} {_size(p.get('indexed_bytes')):>11} "
            f"{capacity:>11} {p.get('used_percent', 0):>6}  {_size(p.get('disk_used')):>11} "
            f"{_size(p.get('disk_free')):>11} {_size(p.get('disk_total')):>11}  {state}"
        )
    if stats["overflow"]:
        lines.append("overflow: the first tier is full; new instances go to a later tier")
    emit(args, stats, "\n".join(lines))
    return EXIT_OK


def migrate_params(args) -> dict:
    """The pools.migrate params the flags say; dry_run always explicit, so the audit row shows the intent."""
    params: dict = {"dry_run": not args.run}
    if args.study:
        params["StudyInstanceUID"] = args.study
    if args.target is not None:
        params["target_pool"] = args.target
    if args.wait:
        params["wait"] = True
    return params


def run_command(args) -> str:
    """The same migration for real, as a command line to copy (shown, never executed)."""
    words = ["pacsdeck", "node", "migrate"]
    if args.config:
        words += ["--config", args.config]
    if args.as_user:
        words += ["--as", args.as_user]
    for uid in args.study or ():
        words += ["--study", uid]
    if args.target is not None:
        words += ["--target", args.target]
    return shlex.join([*words, "--run"])


def cmd_node_migrate(args) -> int:
    report = call_agent(args, "pools.migrate", migrate_params(args))
    lines = [
        f"{m['StudyInstanceUID']}: {m['instances']} instances, {m['bytes']} bytes, "
        f"{m['source_pool']} -> {m['target_pool']} ({m['reason']})"
        for m in report["plan"]
    ]
    lines += [f"skipped {s.get('StudyInstanceUID') or s.get('source_pool')}: {s['why']}" for s in report["skipped"]]
    if report["dry_run"]:
        if report["plan"]:
            lines.append(
                f"dry run: would move {report['studies']} studies, {report['instances']} instances, "
                f"{report['bytes']} bytes; nothing was moved"
            )
            lines.append(f"to move them: {run_command(args)}")
        else:
            lines.append(f"dry run: {report.get('reason') or 'nothing to move'}")
    elif report.get("job_id") is None:
        lines.append(report.get("reason") or "nothing to move")
    else:
        lines.append(
            f"job {report['job_id']} {report['state']}: moved {report['moved_instances']} instances, "
            f"{report['moved_bytes']} bytes in {report['duration_s']} s; {report['failed_instances']} failed"
        )
        lines += [f"error: {e}" for e in report["errors"]]
    emit(args, report, "\n".join(lines))
    return EXIT_FAILURE if report.get("failed_instances") else EXIT_OK


def cmd_node_verify(args) -> int:
    params: dict = {"sample": args.sample}
    if args.pool is not None:
        params["pool"] = args.pool
    report = call_agent(args, "pools.verify", params)
    lines = [f"{p['problem']}: {p['SOPInstanceUID']} in pool {p['pool']} ({p['path']})" for p in report["problems"]]
    lines.append(
        f"checked {report['checked']} instances ({report['bytes']} bytes): {report['ok']} ok, "
        f"{len(report['problems'])} with problems"
    )
    emit(args, report, "\n".join(lines))
    return EXIT_FAILURE if report["problems"] else EXIT_OK


def _common(p) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--as", dest="as_user", metavar="USER", help=AS_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def add_parsers(node_sub) -> None:
    """pools, migrate and verify under `pacsdeck node`; each is the agent method of the same name."""
    p = node_sub.add_parser("pools", help="space per pool and tier: used, free, capacity, instances (pools.list)")
    _common(p)
    p.set_defaults(func=cmd_node_pools)

    p = node_sub.add_parser(
        "migrate",
        help="plan moving studies between pools by the rules, or the ones named; --run moves them (pools.migrate)",
        description="Without --run this is a dry run: it prints the plan (studies, bytes, why) and moves "
        "nothing, as pools.migrate does without dry_run: false.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--run",
        "--yes",
        dest="run",
        action="store_true",
        help="move the studies for real (default: a dry run that only prints the plan)",
    )
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and move nothing (the default; kept for scripts that pass it)",
    )
    p.add_argument("--study", action="append", metavar="UID", help="move this study (repeatable); default: the rules")
    p.add_argument("--target", metavar="POOL", help="pool to move --study studies to (default: the next tier)")
    p.add_argument("--wait", action="store_true", help="wait for a running migration instead of failing")
    _common(p)
    p.set_defaults(func=cmd_node_migrate)

    p = node_sub.add_parser(
        "verify", help="re-read instance files and compare their checksums with the index (pools.verify)"
    )
    p.add_argument("--sample", type=int, default=100, help="how many random instances (0: all; default 100)")
    p.add_argument("--pool", help="only this pool")
    _common(p)
    p.set_defaults(func=cmd_node_verify)

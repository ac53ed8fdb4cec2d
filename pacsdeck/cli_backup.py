"""`pacsdeck node backup run|list|verify|restore`: the agent's backups.* methods in this process, as text."""

from __future__ import annotations

from .cli_common import AS_HELP, CONFIG_HELP, EXIT_FAILURE, EXIT_OK, JSON_HELP, call_agent, emit


def _size(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _line(b: dict) -> str:
    if b["state"] != "complete":
        return f"{b['id']:<32} {b['target']:<10} incomplete: {b['reason']}"
    ver = b.get("last_verification")
    checked = "never verified" if not ver else f"verified {ver['at']} {'ok' if ver['ok'] else 'FAILED'}"
    return (
        f"{b['id']:<32} {b['target']:<10} {b['instances']:>8} {_size(b['bytes']):>10} {b['seconds']:>8.1f}s"
        f"  {b['copied']} copied, {b['linked']} linked; {checked}"
    )


def cmd_backup_list(args) -> int:
    params = {"target": args.target} if args.target else {}
    found = call_agent(args, "backups.list", params)
    lines = [f"{'backup':<32} {'target':<10} {'instances':>8} {'size':>10} {'took':>9}"]
    lines += [_line(b) for b in found["backups"]] or ["no backups yet: pacsdeck node backup run"]
    emit(args, found, "\n".join(lines))
    return EXIT_OK


def cmd_backup_run(args) -> int:
    params: dict = {"wait": not args.no_wait}
    if args.target:
        params["target"] = args.target
    done = call_agent(args, "backups.run", params)
    if done["state"] == "running":
        text = f"backup job {done['job_id']} started; follow it with pacsdeck node backup list or queue.list"
    else:
        b = done["backup"]
        text = (
            f"backup {b['id']} to {b['target']}: {b['instances']} instances, {_size(b['bytes'])} in "
            f"{b['seconds']:.1f} s ({b['copied']} copied, {b['linked']} linked from the previous backup)"
        )
        if done["removed"]:
            text += f"\nretention removed: {', '.join(done['removed'])}"
    emit(args, done, text)
    return EXIT_OK


def cmd_backup_verify(args) -> int:
    result = call_agent(args, "backups.verify", {"id": args.id, "restore_test": args.restore_test})
    lines = list(result["problems"])
    test = result.get("restore_test")
    if test is not None:
        lines += test["problems"]
        lines.append(
            f"restore test: a node restored from it answered C-FIND with {test['studies_found']} of "
            f"{test['studies']} studies; C-GET of {test['instances_compared']} instances, "
            f"{test['instances_mismatched']} differing ({test['seconds']:.1f} s)"
        )
    verdict = "ok" if result["ok"] else f"FAILED: {result['missing']} missing, {result['damaged']} damaged"
    lines.append(f"{result['id']}: {result['checked']} files, {_size(result['bytes'])} re-read: {verdict}")
    emit(args, result, "\n".join(lines))
    return EXIT_OK if result["ok"] else EXIT_FAILURE


def cmd_backup_restore(args) -> int:
    params: dict = {"id": args.id}
    if args.study:
        params["study_uids"] = args.study
    else:
        params.update({"into": args.into, "dry_run": args.dry_run})
    done = call_agent(args, "backups.restore", params)
    if done["studies"] is not None:
        text = (
            f"{done['studies']} studies from {done['id']} back into this node: {done['stored']} instances stored, "
            f"{done['already_there']} already there"
        )
        text += "".join(f"\nfailed: {f}" for f in done["failed"])
        emit(args, done, text)
        return EXIT_FAILURE if done["failed"] else EXIT_OK
    if done["dry_run"]:
        text = f"dry run: {done['instances']} instances, {_size(done['bytes'])} would be restored into {done['into']}"
    else:
        text = (
            f"restored {done['id']} into {done['into']}: {done['instances']} instances, {_size(done['bytes'])}\n"
            f"start it with: pacsdeck node run --config {done['config']} (change its port first if the "
            "original still runs)"
        )
    emit(args, done, text)
    return EXIT_OK


def _common(p) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--as", dest="as_user", metavar="USER", help=AS_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def add_parsers(node_sub) -> None:
    backup = node_sub.add_parser("backup", help="online backups: run, list, verify, restore (backups.*)")
    sub = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)

    p = sub.add_parser("run", help="take a backup now, while the node runs (backups.run)")
    p.add_argument("--target", help="the target's name in node.yaml (default: the first)")
    p.add_argument("--no-wait", action="store_true", help="start it and return (default: wait until it is done)")
    _common(p)
    p.set_defaults(func=cmd_backup_run)

    p = sub.add_parser("list", help="every target's backups, newest first (backups.list)")
    p.add_argument("--target", help="only this target")
    _common(p)
    p.set_defaults(func=cmd_backup_list)

    p = sub.add_parser("verify", help="re-read every file of a backup against its manifest (backups.verify)")
    p.add_argument("id", help="the backup, as list shows it")
    p.add_argument("--restore-test", action="store_true", help="also restore it, start a node on loopback and query it")
    _common(p)
    p.set_defaults(func=cmd_backup_verify)

    p = sub.add_parser(
        "restore",
        help="a whole node into a new or empty folder, or chosen studies back into this node (backups.restore)",
    )
    p.add_argument("id", help="the backup, as list shows it")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--into", metavar="DIR", help="restore the whole node into this folder (new or empty)")
    where.add_argument(
        "--study", action="append", metavar="UID", help="bring this study back into this node (repeatable)"
    )
    p.add_argument("--dry-run", action="store_true", help="with --into: say what would be restored, write nothing")
    _common(p)
    p.set_defaults(func=cmd_backup_restore)

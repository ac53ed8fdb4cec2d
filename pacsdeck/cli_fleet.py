"""`pacsdeck fleet status|trust|aets apply`: the fleet table, SSH host key pinning, the AE roll-out."""

from __future__ import annotations

import json
import sys
import time

from .cli_common import CLIError, err_line, out

FLEET_HELP = "fleet file (default $PACSDECK_FLEET, then $XDG_CONFIG_HOME/pacsdeck/fleet.yaml)"


def load_fleet(args):
    """The fleet file of --fleet (or its default places); a bad one is exit 3 for every fleet command."""
    from console import fleet_cli
    from console.inventory import FleetConfigError

    try:
        return fleet_cli.load(args.fleet)
    except FleetConfigError as err:
        raise CLIError(str(err), fleet_cli.EXIT_FLEET_CONFIG) from None


def cmd_fleet_status(args) -> int:
    """The fleet table for scripts and cron; exit 0 up, 1 degraded, 2 down/unreachable, 3 bad fleet file."""
    from console import fleet_cli

    fleet = load_fleet(args)
    snapshots = fleet_cli.collect(fleet, timeout=args.timeout, ingest_sample=args.ingest_sample)
    document = fleet_cli.status_document(fleet, snapshots)
    out(json.dumps(document, indent=2, sort_keys=True) if args.json else fleet_cli.render_table(snapshots))
    return document["exit_code"]


def cmd_fleet_trust(args) -> int:
    """Show NODE's SSH host key fingerprint and pin it in pacsdeck's known_hosts after confirmation."""
    from console import fleet_cli

    fleet = load_fleet(args)

    def confirm(question: str) -> bool:
        err_line(question, end="")
        answer = sys.stdin.readline()
        return answer.strip().lower() == "yes"

    return fleet_cli.trust(fleet, args.node, yes=args.yes, replace=args.replace, confirm=confirm, out=out)


def cmd_fleet_aets_apply(args) -> int:
    """Diff FILE's AE titles against every selected node, then apply them in batches, stopping at the first
    failed node; exit 0 all done, 1 a node failed (the roll-out stopped), 2 bad input, 3 bad fleet file."""
    from console import rollout
    from console.aets_file import AetsFileError, load_aets_file
    from console.fleet_cli import close_transports
    from console.hostkeys import KnownHosts
    from console.transport import open_transport

    started = time.perf_counter()
    if args.batch < 1:
        raise CLIError(f"--batch: expected a number of nodes, at least 1, got {args.batch}", rollout.EXIT_BAD_INPUT)
    try:
        aets = load_aets_file(args.file)
    except AetsFileError as err:
        raise CLIError(str(err), rollout.EXIT_BAD_INPUT) from None
    fleet = load_fleet(args)
    try:
        entries = rollout.select(fleet, args.nodes)
    except ValueError as err:
        raise CLIError(f"--nodes: {err}", rollout.EXIT_BAD_INPUT) from None
    known = KnownHosts(fleet.known_hosts)
    transports = {e.name: open_transport(e, known) for e in entries}
    try:
        nodes = rollout.plan([e.name for e in entries], transports, aets)
        if not args.json:
            out(rollout.render_plan(nodes))
        if not args.dry_run:
            width = max(len(n.name) for n in nodes)
            if not args.json:
                out(f"apply, {args.batch} node{'s' if args.batch != 1 else ''} at a time:")
            rollout.apply(
                nodes,
                transports,
                batch=args.batch,
                on_node=None if args.json else lambda n: out(rollout.render_node(n, width)),
            )
    finally:
        close_transports(transports)
    seconds = time.perf_counter() - started
    document = rollout.document(
        nodes, aets, fleet=fleet, source=args.file, dry_run=args.dry_run, batch=args.batch, seconds=seconds
    )
    out(json.dumps(document, indent=2, sort_keys=True) if args.json else rollout.render_summary(nodes, args.dry_run))
    return document["exit_code"]


def add_parser(sub) -> None:
    fleet = sub.add_parser("fleet", help="every node of the fleet file: status table, host key trust, AE roll-out")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    p = fleet_sub.add_parser(
        "status",
        help="poll every node once and print the fleet table; exit 0 all up, "
        "1 degraded, 2 down/unreachable/critical, 3 bad fleet file",
    )
    p.add_argument("--fleet", metavar="FILE", help=FLEET_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="give up on nodes that have not answered after S "
        "seconds (default: the largest connect_timeout + 3 x call_timeout of the fleet)",
    )
    p.add_argument(
        "--ingest-sample",
        type=float,
        default=0.0,
        metavar="S",
        help="poll twice, S seconds apart, to show ingest/s (default 0: no rate)",
    )
    p.set_defaults(func=cmd_fleet_status)

    p = fleet_sub.add_parser("trust", help="show NODE's SSH host key fingerprint and pin it after confirmation")
    p.add_argument("node", metavar="NODE", help="node name in the fleet file")
    p.add_argument("--fleet", metavar="FILE", help=FLEET_HELP)
    p.add_argument("--yes", action="store_true", help="pin without asking (check the fingerprint first)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a pinned key that CHANGED (after verifying the new fingerprint on the server)",
    )
    p.set_defaults(func=cmd_fleet_trust)

    aets = fleet_sub.add_parser("aets", help="AE titles across the fleet: apply FILE")
    aets_sub = aets.add_subparsers(dest="fleet_aets_command", required=True, metavar="ACTION")
    p = aets_sub.add_parser(
        "apply",
        help="register or update FILE's AE titles on every selected node: a diff per node, then batches "
        "that stop at the first failed node, then an echo from each; exit 0 done, 1 stopped, 2 bad input",
    )
    p.add_argument("file", metavar="FILE", help="YAML: aets: [{ae_title, host, port, description, operations, ...}]")
    p.add_argument("--fleet", metavar="FILE", help=FLEET_HELP)
    p.add_argument("--nodes", metavar="A,B,...", help="only these nodes, in this order (default: every node)")
    p.add_argument("--dry-run", action="store_true", help="print the plan per node and change nothing")
    p.add_argument(
        "--batch", type=int, default=1, metavar="N", help="apply to N nodes at a time, in parallel (default 1)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the plan and summary")
    p.set_defaults(func=cmd_fleet_aets_apply)

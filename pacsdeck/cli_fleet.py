"""`pacsdeck fleet status|trust`: every node of the fleet file as a table, and SSH host key pinning."""

from __future__ import annotations

import json
import sys

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


def add_parser(sub) -> None:
    fleet = sub.add_parser("fleet", help="every node of the fleet file: status table, host key trust")
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

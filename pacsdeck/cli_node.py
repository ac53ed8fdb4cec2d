"""`pacsdeck node init|run|reindex|check`, and the node parser that also holds the pool commands."""

from __future__ import annotations

from . import cli_backup, cli_pools
from .cli_common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, JSON_HELP, CLIError, config_path, emit


def cmd_node_init(args) -> int:
    from storage.config.values import validate_ae_title, validate_port
    from storage.node import init_node

    ae_title = validate_ae_title(args.ae_title, "--ae-title")
    port = validate_port(args.port, "--port")
    config, created = init_node(args.dir, ae_title, port)
    data = {
        "config": str(config.path),
        "created": created,
        "ae_title": config.ae_title,
        "port": config.port,
        "pools": {p.name: str(p.path) for p in config.pools},
        "index": str(config.index),
    }
    what = "created" if created else "already there; pools and index checked"
    emit(
        args,
        data,
        f"{config.path}: {what}\nnode {config.ae_title} port {config.port}\n"
        f"run it with: pacsdeck node run --config {config.path}",
    )
    return EXIT_OK


def cmd_node_run(args) -> int:
    from storage.node import run_node

    return run_node(config_path(args))


def cmd_node_reindex(args) -> int:
    from storage.config.settings import load_config
    from storage.index.database import Index
    from storage.pools.pool import Pool
    from storage.pools.recovery import reindex

    config = load_config(config_path(args))
    result = reindex([Pool.from_config(p) for p in config.pools], Index(config.index))
    emit(
        args,
        result,
        f"indexed {result['instances']} instances; "
        f"{len(result['unreadable'])} unreadable, {len(result['duplicate_copies'])} duplicate copies",
    )
    return EXIT_OK if not result["unreadable"] else EXIT_FAILURE


def cmd_node_check(args) -> int:
    """health.check as a Nagios plugin: first line status and summary (| perfdata), exit 0/1/2/3."""
    from agent.health import NAGIOS_EXIT
    from agent.server import call_once

    label = {"ok": "OK", "warn": "WARNING", "crit": "CRITICAL", "unknown": "UNKNOWN"}
    try:
        response = call_once(config_path(args), None, None, "health.check", {})
    except CLIError as err:  # no node.yaml there: the hint as it is
        response = {"error": {"message": str(err)}}
    except Exception as err:  # noqa: BLE001 - a plugin that cannot evaluate says UNKNOWN, never a traceback
        response = {"error": {"message": f"{type(err).__name__}: {err}"}}
    if "error" in response:
        message = response["error"].get("message", "health.check failed")
        emit(args, {"status": "unknown", "error": response["error"]}, f"PACSDECK UNKNOWN - {message}")
        return NAGIOS_EXIT["unknown"]
    result = response["result"]
    perf = " ".join(
        f"'{c['name']}'={c['value']}{c['unit'] if c['unit'] in ('%', 'ms', 's') else ''}"
        for c in result["checks"]
        if isinstance(c["value"], (int, float)) and not isinstance(c["value"], bool)
    )
    lines = [f"PACSDECK {label[result['status']]} - {result['summary']} | {perf}"]
    lines += [f"{c['status']:<8} {c['name']:<28} {c['message']}" for c in result["checks"]]
    emit(args, result, "\n".join(lines))
    return NAGIOS_EXIT[result["status"]]


def add_parser(sub) -> None:
    node = sub.add_parser("node", help="the PACS node: init, run, reindex, pools, migrate, verify, backup, check")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    p = node_sub.add_parser("init", help="create node.yaml, pools and index in a folder")
    p.add_argument("--dir", required=True, help="node folder (created if missing)")
    p.add_argument("--ae-title", default="PACSDECK", help="our AE title (default PACSDECK)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_node_init)

    p = node_sub.add_parser("run", help="run the node in the foreground")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_node_run)

    p = node_sub.add_parser("reindex", help="rebuild the index from the files in the pools")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_node_reindex)

    cli_pools.add_parsers(node_sub)
    cli_backup.add_parsers(node_sub)

    p = node_sub.add_parser(
        "check", help="health checks as a Nagios plugin: exit 0 ok, 1 warning, 2 critical, 3 unknown"
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="print the health.check result as JSON")
    p.set_defaults(func=cmd_node_check)

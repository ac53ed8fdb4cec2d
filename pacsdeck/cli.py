"""The `pacsdeck` command: parses arguments, dispatches, and alone decides exit codes and stdout."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done


class CLIError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def _config_path(args) -> str:
    path = args.config or os.environ.get("PACSDECK_CONFIG") or "/etc/pacsdeck/node.yaml"
    return path


def _emit(args, data: dict, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if getattr(args, "json", False) else human)


# --- node -------------------------------------------------------------------------------------


def cmd_node_init(args) -> int:
    from storage.config.values import validate_ae_title, validate_port
    from storage.node import init_node

    ae_title = validate_ae_title(args.ae_title, "--ae-title")
    port = validate_port(args.port, "--port")
    config, created = init_node(args.dir, ae_title, port)
    data = {"config": str(config.path), "created": created, "ae_title": config.ae_title, "port": config.port,
            "pools": {p.name: str(p.path) for p in config.pools}, "index": str(config.index)}
    what = "created" if created else "already there; pools and index checked"
    _emit(args, data, f"{config.path}: {what}\nnode {config.ae_title} port {config.port}\n"
          f"run it with: pacsdeck node run --config {config.path}")
    return EXIT_OK


def cmd_node_run(args) -> int:
    from storage.node import run_node

    return run_node(_config_path(args))


def cmd_node_reindex(args) -> int:
    from storage.config.settings import load_config
    from storage.index.database import Index
    from storage.pools.pool import Pool
    from storage.pools.recovery import reindex

    config = load_config(_config_path(args))
    result = reindex([Pool.from_config(p) for p in config.pools], Index(config.index))
    _emit(args, result, f"indexed {result['instances']} instances; "
          f"{len(result['unreadable'])} unreadable, {len(result['duplicate_copies'])} duplicate copies")
    return EXIT_OK if not result["unreadable"] else EXIT_FAILURE


def _node_context(args):
    from storage.config.settings import load_config
    from storage.node import Node

    return Node(load_config(_config_path(args)))


def cmd_node_pools(args) -> int:
    from storage.pools.placement import pool_stats

    stats = pool_stats(_node_context(args).placement)
    lines = [f"{'pool':<12} {'tier':<10} {'instances':>9} {'used':>14} {'capacity':>14} {'%':>6}  state"]
    for p in stats["pools"]:
        state = p.get("error") or ("above high watermark" if p.get("above_high_watermark") else
                                   "accepting" if p["accepting"] else "full")
        lines.append(f"{p['name']:<12} {p['tier']:<10} {p['instances']:>9} {p.get('used', 0):>14} "
                     f"{p.get('capacity', 0):>14} {p.get('used_percent', 0):>6}  {state}")
    if stats["overflow"]:
        lines.append("overflow: the first tier is full; new instances go to a later tier")
    _emit(args, stats, "\n".join(lines))
    return EXIT_OK


def cmd_node_migrate(args) -> int:
    from storage.pools.migration import MigrationBusy, migrate

    try:
        report = migrate(_node_context(args), study_uids=args.study or None, target=args.target,
                         dry_run=args.dry_run, wait=args.wait)
    except ValueError as err:
        raise CLIError(str(err), EXIT_USAGE) from None
    except MigrationBusy as err:
        raise CLIError(str(err)) from None
    lines = [f"{m['study_uid']}: {m['instances']} instances, {m['bytes']} bytes, {m['source']} -> {m['target']}"
             f" ({m['reason']})" for m in report["plan"]]
    lines += [f"skipped {s.get('study_uid') or s.get('source')}: {s['why']}" for s in report["skipped"]]
    if args.dry_run:
        lines.append(f"would move {report['studies']} studies, {report['instances']} instances, {report['bytes']} bytes")
    elif report.get("job_id") is None:
        lines.append("nothing to move")
    else:
        lines.append(f"job {report['job_id']} {report['state']}: moved {report['moved_instances']} instances, "
                     f"{report['moved_bytes']} bytes in {report['seconds']} s; {report['failed_instances']} failed")
        lines += [f"error: {e}" for e in report["errors"]]
    _emit(args, report, "\n".join(lines))
    return EXIT_FAILURE if report.get("failed_instances") else EXIT_OK


def cmd_node_verify(args) -> int:
    from storage.pools.migration import verify

    try:
        report = verify(_node_context(args), sample=args.sample, pool=args.pool)
    except ValueError as err:
        raise CLIError(str(err), EXIT_USAGE) from None
    lines = [f"{p['problem']}: {p['sop_uid']} in pool {p['pool']} ({p['path']})" for p in report["problems"]]
    lines.append(f"checked {report['checked']} instances ({report['bytes']} bytes): {report['ok']} ok, "
                 f"{len(report['problems'])} with problems")
    _emit(args, report, "\n".join(lines))
    return EXIT_FAILURE if report["problems"] else EXIT_OK


def cmd_node_check(args) -> int:
    """health.check as a Nagios plugin: first line status and summary (| perfdata), exit 0/1/2/3."""
    from agent.health import NAGIOS_EXIT
    from agent.server import call_once

    label = {"ok": "OK", "warn": "WARNING", "crit": "CRITICAL", "unknown": "UNKNOWN"}
    try:
        response = call_once(_config_path(args), None, None, "health.check", {})
    except Exception as err:  # noqa: BLE001 - a plugin that cannot evaluate says UNKNOWN, never a traceback
        response = {"error": {"message": f"{type(err).__name__}: {err}"}}
    if "error" in response:
        message = response["error"].get("message", "health.check failed")
        _emit(args, {"status": "unknown", "error": response["error"]}, f"PACSDECK UNKNOWN - {message}")
        return NAGIOS_EXIT["unknown"]
    result = response["result"]
    perf = " ".join(f"'{c['name']}'={c['value']}{c['unit'] if c['unit'] in ('%', 'ms', 's') else ''}"
                    for c in result["checks"]
                    if isinstance(c["value"], (int, float)) and not isinstance(c["value"], bool))
    lines = [f"PACSDECK {label[result['status']]} - {result['summary']} | {perf}"]
    lines += [f"{c['status']:<8} {c['name']:<28} {c['message']}" for c in result["checks"]]
    _emit(args, result, "\n".join(lines))
    return NAGIOS_EXIT[result["status"]]


# --- agent ------------------------------------------------------------------------------------


def _agent_identity(args) -> str | None:
    """--as, validated here so a forced command with a bad name fails loudly before serving anything."""
    if args.as_user is None:
        return None
    from agent.protocol import RPCError
    from agent.validate import user_name

    try:
        return user_name(args.as_user, "--as")
    except RPCError as err:
        raise CLIError(err.message, err.exit_code) from None


def cmd_agent_stdio(args) -> int:
    from agent.server import run_stdio

    return run_stdio(_config_path(args), _agent_identity(args), args.authorized_keys)


def cmd_agent_call(args) -> int:
    from agent.protocol import EXIT_CODES, INVALID_PARAMS, RPCError, decode_line
    from agent.server import call_once

    try:
        params = decode_line(args.params.encode("utf-8", "surrogateescape")) if args.params else {}
    except RPCError as err:
        raise CLIError(f"--params: {err.message}", EXIT_CODES[INVALID_PARAMS]) from None
    except ValueError as err:
        raise CLIError(f"--params: not valid JSON: {err}", EXIT_CODES[INVALID_PARAMS]) from None
    if not isinstance(params, dict):
        raise CLIError("--params: must be a JSON object", EXIT_CODES[INVALID_PARAMS])
    response = call_once(_config_path(args), _agent_identity(args), args.authorized_keys, args.method, params)
    if "error" in response:
        err = RPCError.from_error(response["error"])
        print(json.dumps({"error": response["error"]}, indent=2, sort_keys=True))
        print(f"pacsdeck: {args.method}: {err.kind}: {err.message}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(response["result"], indent=2, sort_keys=True))
    return EXIT_OK


# --- fleet ------------------------------------------------------------------------------------


def _fleet(args):
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

    fleet = _fleet(args)
    snapshots = fleet_cli.collect(fleet, timeout=args.timeout, ingest_sample=args.ingest_sample)
    document = fleet_cli.status_document(fleet, snapshots)
    print(json.dumps(document, indent=2, sort_keys=True) if args.json else fleet_cli.render_table(snapshots))
    return document["exit_code"]


def cmd_fleet_trust(args) -> int:
    """Show NODE's SSH host key fingerprint and pin it in pacsdeck's known_hosts after confirmation."""
    from console import fleet_cli

    fleet = _fleet(args)

    def confirm(question: str) -> bool:
        print(question, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        return answer.strip().lower() == "yes"

    return fleet_cli.trust(fleet, args.node, yes=args.yes, replace=args.replace, confirm=confirm,
                           out=lambda text: print(text, flush=True))


# --- console and up ---------------------------------------------------------------------------


def _run_console(fleet, readonly: bool) -> int:
    from console.app import PacsdeckConsole

    # Log lines written to the terminal would draw over the TUI; the console shows failures in its rows.
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.CRITICAL + 1)
    try:
        PacsdeckConsole(fleet, readonly=readonly).run()
    finally:
        root.setLevel(saved)
    return EXIT_OK


def cmd_console(args) -> int:
    return _run_console(_fleet(args), args.readonly)


def _start_node(config_path, log_path, timeout: float = 60.0):
    """`node run` as a child process; returns it once it printed `ready`, else raises CLIError."""
    import subprocess
    import threading

    # A lifeline: the node gets the read end of a pipe whose write end only this process holds. When we
    # end, however (kill -9 too), the kernel closes it and the node stops as on SIGTERM (storage/node.py).
    lifeline, keep = os.pipe()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pacsdeck.cli", "node", "run", "--config", str(config_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, pass_fds=(lifeline,),
                                env={**os.environ, "PACSDECK_STOP_WITH_FD": str(lifeline)},
                                start_new_session=True)  # Ctrl-C in the console is for the console
    os.close(lifeline)
    proc.lifeline = keep  # open until this process ends
    first: list[bytes] = []
    answered = threading.Event()

    def read() -> None:  # the ready line, then drain stdout so the node never blocks on a full pipe
        first.append(proc.stdout.readline())
        answered.set()
        for _ in proc.stdout:
            pass

    threading.Thread(target=read, daemon=True).start()
    answered.wait(timeout)
    if not first or not first[0].startswith(b"ready"):
        _stop_node(proc)
        raise CLIError(f"the node did not start (exit code {proc.returncode}); see {log_path}")
    return proc


def _stop_node(proc, timeout: float = 30.0) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # by PID: the node this command started
            proc.wait()


DEMO_AE = "DEMO"


def _send_demo_studies(config, studies: int = 3, per_study: int = 4) -> int:
    """A new single box gets a few small synthetic CT studies, sent over DICOM as a modality would send
    them (so the index, the association log and the console all have something to show)."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from agent.server import call_once
    from storage import synthetic
    from storage.dimse.echo import send_datasets

    response = call_once(str(config.path), None, None, "aets.add", {
        "ae_title": DEMO_AE, "host": "127.0.0.1", "port": 104, "operations": ["store"],
        "description": "pacsdeck up: sent the demo studies; remove it with aets.remove"})
    if "error" in response:
        return 0

    def datasets():
        for spec in synthetic.studies(studies, prefix="DEMO"):
            series = generate_uid()
            for number in range(1, per_study + 1):
                yield synthetic.instance(spec, series_uid=series, sop_uid=generate_uid(), number=number, rows=256,
                                         cols=256)

    return send_datasets(DEMO_AE, config.ae_title, "127.0.0.1", config.port, datasets(),
                         [(CTImageStorage, ExplicitVRLittleEndian)])


def _has_index(node_dir) -> bool:
    """Was this folder's node initialised before? A node.yaml written by hand first (as `node init`
    allows) but never initialised still counts as new, so it gets the demo studies too."""
    import yaml

    try:
        data = yaml.safe_load((node_dir / "node.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # no node.yaml, or one init will refuse with the reason
    name = data.get("index") if isinstance(data, dict) else None
    path = node_dir / (name if isinstance(name, str) and name else "index.sqlite")  # an absolute name wins
    return path.exists()


def cmd_up(args) -> int:
    """Single box: init the folder if new, run its node unless one runs there, open the console on it."""
    from pathlib import Path

    from console.inventory import single_node_fleet
    from storage.config.values import validate_ae_title, validate_port
    from storage.node import init_node
    from storage.workers import running_node_pid

    node_dir = Path(args.dir).expanduser().absolute()
    new = not _has_index(node_dir)
    config, _ = init_node(node_dir, validate_ae_title(args.ae_title, "--ae-title"),
                          validate_port(args.port, "--port"))
    # The node lock says whether a node already serves this folder: then it is not ours to stop.
    proc = None if running_node_pid(node_dir) is not None else _start_node(config.path, node_dir / "node.log")
    try:
        if new:
            stored = _send_demo_studies(config)
            print(f"{config.path}: new node; {stored} demo instances stored", file=sys.stderr)
        return _run_console(single_node_fleet(config.path), args.readonly)
    finally:
        if proc is not None:
            _stop_node(proc)


# --- preview ----------------------------------------------------------------------------------


def cmd_preview(args) -> int:
    import re

    from storage.imaging import encoders
    from storage.imaging.preview import PreviewError, Window, instance_path, read

    target = args.target
    try:
        window = Window.parse(args.window) if args.window else None
        mode = encoders.detect_mode(args.mode)
        if os.path.exists(target):
            path = target
        elif re.fullmatch(r"[0-9]+(\.[0-9]+)+", target):
            try:
                path = instance_path(_node_context(args), target)
            except LookupError as err:
                raise CLIError(str(err)) from None
        else:
            raise CLIError(f"{target}: no such file, and not a SOP Instance UID", EXIT_USAGE)
        size = shutil.get_terminal_size((80, 24)) if sys.stdout.isatty() else None
        columns = args.width or (max(1, size.columns - 1) if size else 80)
        # On a screen the whole image should be visible without scrolling; in a log the width decides.
        max_rows = max(1, size.lines - 2) if size and not args.width else None
        image, where, text = encoders.render_text(read(path), mode, columns, max_rows=max_rows,
                                                  cell=encoders.terminal_cell_size(), frame=args.frame,
                                                  window=window, upscale=bool(args.width))
    except (PreviewError, encoders.EncodeError) as err:
        usage = isinstance(err, encoders.EncodeError) or err.reason in ("bad_frame", "bad_window")
        raise CLIError(str(err), EXIT_USAGE if usage else EXIT_FAILURE) from None
    sys.stdout.write(text)
    w = image.window
    window_text = f"window {w.center:g},{w.width:g} ({image.window_source})" if w else image.window_source
    if image.window_source == "none":
        window_text = "colour"
    print(f"{os.path.basename(str(path))}: frame {image.frame}/{image.frames}, {image.source_size[0]}x"
          f"{image.source_size[1]}, {window_text}{', inverted' if image.inverted else ''}, {mode} "
          f"{where.columns}x{where.rows} cells")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacsdeck", description="A terminal-first PACS.")
    parser.add_argument("--log-level", default=os.environ.get("PACSDECK_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (logs go to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="the PACS node: init, run, reindex")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    p = node_sub.add_parser("init", help="create node.yaml, pools and index in a folder")
    p.add_argument("--dir", required=True, help="node folder (created if missing)")
    p.add_argument("--ae-title", default="PACSDECK", help="our AE title (default PACSDECK)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_node_init)

    p = node_sub.add_parser("run", help="run the node in the foreground")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.set_defaults(func=cmd_node_run)

    p = node_sub.add_parser("reindex", help="rebuild the index from the files in the pools")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_node_reindex)

    p = node_sub.add_parser("pools", help="space per pool and tier: used, free, capacity, instances")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_node_pools)

    p = node_sub.add_parser("migrate", help="move studies between pools by the rules, or the ones named")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (studies, bytes, why) and move nothing")
    p.add_argument("--study", action="append", metavar="UID", help="move this study (repeatable); default: the rules")
    p.add_argument("--target", metavar="POOL", help="pool to move --study studies to (default: the next tier)")
    p.add_argument("--wait", action="store_true", help="wait for a running migration instead of failing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_node_migrate)

    p = node_sub.add_parser("verify", help="re-read instance files and compare their checksums with the index")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.add_argument("--sample", type=int, default=100, help="how many random instances (0: all; default 100)")
    p.add_argument("--pool", help="only this pool")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_node_verify)

    p = node_sub.add_parser("check", help="health checks as a Nagios plugin: exit 0 ok, 1 warning, 2 critical, "
                            "3 unknown")
    p.add_argument("--config", help="node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)")
    p.add_argument("--json", action="store_true", help="print the health.check result as JSON")
    p.set_defaults(func=cmd_node_check)

    agent = sub.add_parser("agent", help="the JSON-RPC agent: a stdio session or one call")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    config_help = "node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)"
    as_help = "act as this agent user (set by the SSH forced command); default: the node's owner as admin"
    keys_help = "authorized_keys that users.* writes (default $PACSDECK_AUTHORIZED_KEYS, then ~/.ssh/authorized_keys)"

    def agent_options(p) -> None:
        p.add_argument("--config", help=config_help)
        p.add_argument("--as", dest="as_user", metavar="USER", help=as_help)
        p.add_argument("--authorized-keys", metavar="FILE", help=keys_help)

    p = agent_sub.add_parser("stdio", help="JSON-RPC 2.0 on stdin/stdout, one JSON object per line")
    agent_options(p)
    p.set_defaults(func=cmd_agent_stdio)

    p = agent_sub.add_parser("call", help="one call; the result is printed as JSON, the exit code says how it went")
    p.add_argument("method", metavar="METHOD", help="e.g. node.status; rpc.discover lists them")
    p.add_argument("--params", metavar="JSON", help='params as a JSON object, e.g. \'{"limit": 5}\'')
    agent_options(p)
    p.set_defaults(func=cmd_agent_call)

    fleet = sub.add_parser("fleet", help="every node of the fleet file: status table, host key trust")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    fleet_help = "fleet file (default $PACSDECK_FLEET, then $XDG_CONFIG_HOME/pacsdeck/fleet.yaml)"

    p = fleet_sub.add_parser("status", help="poll every node once and print the fleet table; exit 0 all up, "
                             "1 degraded, 2 down/unreachable/critical, 3 bad fleet file")
    p.add_argument("--fleet", metavar="FILE", help=fleet_help)
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--timeout", type=float, metavar="S", help="give up on nodes that have not answered after S "
                   "seconds (default: the largest connect_timeout + 3 x call_timeout of the fleet)")
    p.add_argument("--ingest-sample", type=float, default=0.0, metavar="S", help="poll twice, S seconds apart, "
                   "to show ingest/s (default 0: no rate)")
    p.set_defaults(func=cmd_fleet_status)

    p = fleet_sub.add_parser("trust", help="show NODE's SSH host key fingerprint and pin it after confirmation")
    p.add_argument("node", metavar="NODE", help="node name in the fleet file")
    p.add_argument("--fleet", metavar="FILE", help=fleet_help)
    p.add_argument("--yes", action="store_true", help="pin without asking (check the fingerprint first)")
    p.add_argument("--replace", action="store_true", help="replace a pinned key that CHANGED (after verifying "
                   "the new fingerprint on the server)")
    p.set_defaults(func=cmd_fleet_trust)

    p = sub.add_parser("console", help="the fleet console (TUI): every node of the fleet file in one view")
    p.add_argument("--fleet", metavar="FILE", help="fleet file (default $PACSDECK_FLEET, then "
                   "$XDG_CONFIG_HOME/pacsdeck/fleet.yaml)")
    p.add_argument("--readonly", action="store_true", help="hide every action that changes a node")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("up", help="single box: init a node folder if new, run the node, open the console on it")
    p.add_argument("--dir", default="demo", help="node folder (default ./demo; created if missing)")
    p.add_argument("--ae-title", default="PACSDECK", help="AE title of a new node (default PACSDECK)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port of a new node (default 11112)")
    p.add_argument("--readonly", action="store_true", help="hide every action that changes the node")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("preview", help="one image in the terminal: sixel, kitty, half-cell blocks or ASCII")
    p.add_argument("target", metavar="FILE|SOPInstanceUID", help="a DICOM file, or an instance in the node's index")
    p.add_argument("--frame", type=int, default=1, help="frame number of a multi-frame instance (1-based; default 1)")
    p.add_argument("--window", metavar="C,W", help="window center,width in modality units, e.g. 40,400 "
                   "(default: the file's window, its VOI LUT, else automatic)")
    p.add_argument("--mode", default="auto", choices=["auto", "sixel", "kitty", "halfcell", "ascii"],
                   help="how to draw it (default auto: $PACSDECK_PREVIEW_MODE, else what the terminal supports; "
                   "ascii when not a terminal)")
    p.add_argument("--width", type=int, metavar="COLS", help="width in terminal columns (default: the terminal's)")
    p.add_argument("--config", help=config_help + "; only for a SOPInstanceUID")
    p.set_defaults(func=cmd_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # The fleet commands report each node's connection failure in its row; paramiko's own log is noise there.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    from storage.config.values import ConfigError
    from storage.dimse import UnsupportedPynetdicom
    from storage.workers import NodeAlreadyRunning

    try:
        return args.func(args)
    except ConfigError as err:
        print(f"pacsdeck: config: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (NodeAlreadyRunning, UnsupportedPynetdicom) as err:
        print(f"pacsdeck: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except CLIError as err:
        print(f"pacsdeck: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"pacsdeck: {err}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

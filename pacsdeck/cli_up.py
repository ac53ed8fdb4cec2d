"""`pacsdeck console` and `pacsdeck up`: the TUI on a fleet, or on a single box whose node it starts."""

from __future__ import annotations

import logging
import os
import sys

from .cli_common import CONFIG_ENV, EXIT_OK, CLIError, err_line, out
from .cli_fleet import FLEET_HELP, load_fleet


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
    return _run_console(load_fleet(args), args.readonly)


def _start_node(config_path, log_path, timeout: float = 60.0):
    """`node run` as a child process; returns it once it printed `ready`, else raises CLIError."""
    import subprocess
    import threading

    # A lifeline: the node gets the read end of a pipe whose write end only this process holds. When we
    # end, however (kill -9 too), the kernel closes it and the node stops as on SIGTERM (storage/node.py).
    lifeline, keep = os.pipe()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacsdeck.cli", "node", "run", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            pass_fds=(lifeline,),
            env={**os.environ, "PACSDECK_STOP_WITH_FD": str(lifeline)},
            start_new_session=True,
        )  # Ctrl-C in the console is for the console
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

    response = call_once(
        str(config.path),
        None,
        None,
        "aets.add",
        {
            "ae_title": DEMO_AE,
            "host": "127.0.0.1",
            "port": 104,
            "operations": ["store"],
            "description": "pacsdeck up: sent the demo studies; remove it with aets.remove",
        },
    )
    if "error" in response:
        return 0

    def datasets():
        for spec in synthetic.studies(studies, prefix="DEMO"):
            series = generate_uid()
            for number in range(1, per_study + 1):
                yield synthetic.instance(
                    spec, series_uid=series, sop_uid=generate_uid(), number=number, rows=256, cols=256
                )

    return send_datasets(
        DEMO_AE, config.ae_title, "127.0.0.1", config.port, datasets(), [(CTImageStorage, ExplicitVRLittleEndian)]
    )


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


def make_findable(config_path) -> None:
    """What lets the other commands find the node `up` runs: the one line that points them at it, and, for
    `fleet status` and `console`, a fleet file with it as a `local` node when the user has none.
    An existing fleet file is never rewritten (it may hold comments and other nodes): a hint says what to add."""
    from pathlib import Path

    import yaml

    from console.inventory import LOCAL, FleetConfigError, default_fleet_path, load_fleet, single_node_fleet

    config_path = Path(config_path).absolute()
    out(f"export {CONFIG_ENV}={config_path}")
    entry = single_node_fleet(config_path).nodes[0]
    fleet_path = default_fleet_path()
    document = {"nodes": [{"name": entry.name, "transport": LOCAL, "config": entry.config}]}
    try:
        fleet_path.parent.mkdir(parents=True, exist_ok=True)
        with open(fleet_path, "x", encoding="utf-8") as f:  # "x": never over a file made meanwhile
            f.write("# Written by `pacsdeck up`: the fleet commands read this file by default.\n")
            f.write(yaml.safe_dump(document, sort_keys=False))
        err_line(f"{fleet_path}: new fleet file with this node ({entry.name}): `pacsdeck fleet status` finds it")
        return
    except FileExistsError:
        pass
    except OSError as err:
        err_line(
            f"{fleet_path}: cannot write the fleet file ({err.strerror}); use `pacsdeck fleet status --fleet FILE`"
        )
        return
    try:
        listed = any(
            n.transport == LOCAL and n.config and Path(n.config).resolve() == Path(entry.config)
            for n in load_fleet(fleet_path).nodes
        )
    except FleetConfigError:
        listed = False
    if not listed:
        err_line(
            f"{fleet_path} does not list this node; add it under nodes: "
            f"{{name: {entry.name}, transport: {LOCAL}, config: {entry.config}}}"
        )


def cmd_up(args) -> int:
    """Single box: init the folder if new, run its node unless one runs there, open the console on it."""
    from pathlib import Path

    from console.inventory import single_node_fleet
    from storage.config.values import validate_ae_title, validate_port
    from storage.node import init_node
    from storage.workers import running_node_pid

    node_dir = Path(args.dir).expanduser().absolute()
    new = not _has_index(node_dir)
    config, _ = init_node(node_dir, validate_ae_title(args.ae_title, "--ae-title"), validate_port(args.port, "--port"))
    # The node lock says whether a node already serves this folder: then it is not ours to stop.
    proc = None if running_node_pid(node_dir) is not None else _start_node(config.path, node_dir / "node.log")
    try:
        if new:
            stored = _send_demo_studies(config)
            err_line(f"{config.path}: new node; {stored} demo instances stored")
        make_findable(config.path)
        return _run_console(single_node_fleet(config.path), args.readonly)
    finally:
        if proc is not None:
            _stop_node(proc)


def add_parsers(sub) -> None:
    p = sub.add_parser("console", help="the fleet console (TUI): every node of the fleet file in one view")
    p.add_argument("--fleet", metavar="FILE", help=FLEET_HELP)
    p.add_argument("--readonly", action="store_true", help="hide every action that changes a node")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("up", help="single box: init a node folder if new, run the node, open the console on it")
    p.add_argument("--dir", default="demo", help="node folder (default ./demo; created if missing)")
    p.add_argument("--ae-title", default="PACSDECK", help="AE title of a new node (default PACSDECK)")
    p.add_argument("--port", type=int, default=11112, help="DICOM port of a new node (default 11112)")
    p.add_argument("--readonly", action="store_true", help="hide every action that changes the node")
    p.set_defaults(func=cmd_up)

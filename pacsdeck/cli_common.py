"""What every command group shares: exit codes, CLIError, the config lookup, stdout, in-process agent calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done

CONFIG_HELP = "node.yaml (default $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml)"
AS_HELP = "act as this agent user (set by the SSH forced command); default: the node's owner as admin"
JSON_HELP = "print the result as JSON"


class CLIError(Exception):
    """A failure to report as one line on stderr with an exit code (cli.run turns it into both)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code

    @classmethod
    def from_rpc(cls, method: str, err) -> CLIError:
        """An agent.protocol.RPCError as `agent call` reports it: method, kind, message; exit code per kind."""
        return cls(f"{method}: {err.kind}: {err.message}", err.exit_code)


CONFIG_ENV = "PACSDECK_CONFIG"
DEFAULT_CONFIG = "/etc/pacsdeck/node.yaml"


def config_path(args, *, must_exist: bool = True) -> str:
    """--config, then $PACSDECK_CONFIG, then /etc/pacsdeck/node.yaml; a missing file is a usage error
    that says how to name the right one (`agent stdio` reports it per call instead: must_exist=False)."""
    path = args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    if must_exist and not os.path.exists(path):
        raise CLIError(missing_config(path), EXIT_USAGE)
    return path


def missing_config(path: str) -> str:
    """What to do when the node.yaml a command looks for is not there: name the way to pass one, and the
    node folders (`pacsdeck up` makes ./demo) found in the current directory."""
    found = [str(p) for p in sorted(Path.cwd().glob("*/node.yaml"))[:3]]
    if Path("node.yaml").is_file():
        found.insert(0, str(Path("node.yaml").absolute()))
    here = f"; found here: {', '.join(found)}" if found else ""
    return (
        f"{path}: no such file; name the node's config with --config FILE or "
        f"`export {CONFIG_ENV}=FILE`{here} (a new node: `pacsdeck node init --dir DIR`)"
    )


def emit(args, data, human: str) -> None:
    """The command's result on stdout: the JSON document with --json, else the human text."""
    out(json.dumps(data, indent=2, sort_keys=True) if getattr(args, "json", False) else human)


def out(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def err_line(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def agent_identity(args) -> str | None:
    """--as, validated here so a forced command with a bad name fails loudly before serving anything."""
    if getattr(args, "as_user", None) is None:
        return None
    from agent.protocol import RPCError
    from agent.validate import user_name

    try:
        return user_name(args.as_user, "--as")
    except RPCError as err:
        raise CLIError(err.message, err.exit_code) from None


def call_agent(args, method: str, params: dict):
    """One agent method in this process, through the agent's own dispatcher: the caller is --as USER or the
    local account (as for `agent call`), roles are checked, audited methods are logged. The result, or
    CLIError with the agent's kind and message."""
    from agent.protocol import RPCError, unwrap
    from agent.server import call_once
    from storage.config.settings import load_config

    path = config_path(args)
    load_config(path)  # a node.yaml the node would refuse is a usage error here, as for every node command
    try:
        return unwrap(call_once(path, agent_identity(args), None, method, params))
    except RPCError as err:
        raise CLIError.from_rpc(method, err) from None

"""`pacsdeck agent stdio|call`: the JSON-RPC agent as a stdio session, or one call printed as JSON."""

from __future__ import annotations

import json
import os

from .cli_common import AS_HELP, CONFIG_HELP, EXIT_OK, CLIError, agent_identity, config_path, missing_config, out

KEYS_HELP = "authorized_keys that users.* writes (default $PACSDECK_AUTHORIZED_KEYS, then ~/.ssh/authorized_keys)"


def cmd_agent_stdio(args) -> int:
    from agent.server import run_stdio

    return run_stdio(config_path(args, must_exist=False), agent_identity(args), args.authorized_keys)


def cmd_agent_call(args) -> int:
    from agent.protocol import EXIT_CODES, INVALID_PARAMS, UNAVAILABLE, RPCError, decode_line
    from agent.server import call_once

    try:
        params = decode_line(args.params.encode("utf-8", "surrogateescape")) if args.params else {}
    except RPCError as err:
        raise CLIError(f"--params: {err.message}", EXIT_CODES[INVALID_PARAMS]) from None
    except ValueError as err:
        raise CLIError(f"--params: not valid JSON: {err}", EXIT_CODES[INVALID_PARAMS]) from None
    if not isinstance(params, dict):
        raise CLIError("--params: must be a JSON object", EXIT_CODES[INVALID_PARAMS])
    path = config_path(args, must_exist=False)
    if not os.path.exists(path):  # the error document scripts read, with the line that says what to do
        response = {"error": RPCError(UNAVAILABLE, missing_config(path)).to_error()}
    else:
        response = call_once(path, agent_identity(args), args.authorized_keys, args.method, params)
    if "error" in response:
        # Scripts read the error document on stdout; the person reads the line on stderr.
        out(json.dumps({"error": response["error"]}, indent=2, sort_keys=True))
        raise CLIError.from_rpc(args.method, RPCError.from_error(response["error"]))
    out(json.dumps(response["result"], indent=2, sort_keys=True))
    return EXIT_OK


def add_parser(sub) -> None:
    agent = sub.add_parser("agent", help="the JSON-RPC agent: a stdio session or one call")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")

    def agent_options(p) -> None:
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument("--as", dest="as_user", metavar="USER", help=AS_HELP)
        p.add_argument("--authorized-keys", metavar="FILE", help=KEYS_HELP)

    p = agent_sub.add_parser("stdio", help="JSON-RPC 2.0 on stdin/stdout, one JSON object per line")
    agent_options(p)
    p.set_defaults(func=cmd_agent_stdio)

    p = agent_sub.add_parser("call", help="one call; the result is printed as JSON, the exit code says how it went")
    p.add_argument("method", metavar="METHOD", help="e.g. node.status; rpc.discover lists them")
    p.add_argument("--params", metavar="JSON", help="params as a JSON object, e.g. '{\"limit\": 5}'")
    agent_options(p)
    p.set_defaults(func=cmd_agent_call)

"""The `pacsdeck` command: assembles the parser of every command group, runs one, and alone decides exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import cli_agent, cli_fleet, cli_node, cli_preview, cli_up
from .cli_common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CLIError, err_line

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "CLIError", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacsdeck", description="A terminal-first PACS.")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PACSDECK_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (logs go to stderr)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_node.add_parser(sub)
    cli_agent.add_parser(sub)
    cli_fleet.add_parser(sub)
    cli_up.add_parsers(sub)
    cli_preview.add_parser(sub)
    _list_actions(sub)
    return parser


def _list_actions(sub) -> None:
    """Each command group's line in `pacsdeck --help` names all its actions, from the parser itself, so
    a new action can never be missing there: "the PACS node: init, run, reindex, pools, ..."."""
    for entry in sub._choices_actions:  # argparse keeps the --help lines of subcommands here
        group = sub.choices[entry.dest]
        actions = [a for a in group._actions if isinstance(a, argparse._SubParsersAction)]
        if actions and entry.help:
            entry.help = f"{entry.help.split(':', 1)[0]}: {', '.join(actions[0].choices)}"


def run(args) -> int:
    """The command's exit code: its own, or the one its failure maps to (with one line on stderr)."""
    from storage.config.values import ConfigError
    from storage.dimse import UnsupportedPynetdicom
    from storage.workers import NodeAlreadyRunning

    try:
        return args.func(args)
    except ConfigError as err:
        err_line(f"pacsdeck: config: {err}")
        return EXIT_USAGE
    except (NodeAlreadyRunning, UnsupportedPynetdicom) as err:
        err_line(f"pacsdeck: {err}")
        return EXIT_FAILURE
    except CLIError as err:
        err_line(f"pacsdeck: {err}")
        return err.code
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        err_line(f"pacsdeck: {err}")
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # The fleet commands report each node's connection failure in its row; paramiko's own log is noise there.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

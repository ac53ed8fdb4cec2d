"""The one check every agent result the tests see goes through: it must fit its method's declared result schema."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

import pytest

from agent.registry import build_table
from agent.schema import mismatches

# The agent under test is this checkout, so its table here declares what its processes answer.
RESULT_SCHEMAS = {name: method.result for name, method in build_table().items()}


def check_result(method: str, result) -> None:
    """Fail the test unless `result` fits the result schema `method` declares (rpc.discover publishes it)."""
    schema = RESULT_SCHEMAS.get(method)
    if schema is None:
        return  # not a method of ours: the test is about its error
    problems = mismatches(result, schema)
    if problems:
        pytest.fail(
            f"{method}: the result does not match its declared schema:\n  " + "\n  ".join(problems), pytrace=False
        )


def check_cli(args: Sequence[str], done: subprocess.CompletedProcess) -> None:
    """A `pacsdeck` run a test made: what `agent call METHOD` or `node check --json` printed as a result."""
    args = list(args)
    if args[:2] == ["agent", "call"] and len(args) > 2 and done.returncode == 0:
        check_result(args[2], json.loads(done.stdout))
    elif args[:2] == ["node", "check"] and "--json" in args and done.returncode in (0, 1, 2):
        check_result("health.check", json.loads(done.stdout))  # 3: unknown, printed as an error

"""The agent's stdio loop and dispatcher: one JSON object per line in, one per line out, errors never exit."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import BinaryIO

from . import audit
from .context import AgentContext
from .protocol import (
    FORBIDDEN,
    INTERNAL,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    RPCError,
    TooDeep,
    cut_deep,
    decode_line,
    encode,
    error_response,
    parse_request,
    result_response,
)
from .registry import Method, build_table
from .roles import VIEWER, allows, required_role

log = logging.getLogger(__name__)


class Dispatcher:
    """Turns request objects into responses: roles, params, the handler, audit. Never raises."""

    def __init__(self, ctx: AgentContext, table: dict[str, Method] | None = None):
        self.ctx = ctx
        self.table = table if table is not None else build_table()

    def handle(self, message, refused: RPCError | None = None):
        """A response for one request or a batch; None when nothing is owed (notifications).

        `refused`: the line was refused (too deep) and `message` is its envelope; each call in it is
        answered with that error, after the role check, and audited like any other refused call.
        """
        if isinstance(message, list):
            if not message:
                return error_response(
                    None, RPCError(INVALID_PARAMS, "invalid request: empty batch", code=INVALID_REQUEST)
                )
            out = [r for r in (self._one(m, refused) for m in message) if r is not None]
            return out or None
        return self._one(message, refused)

    def _one(self, message, refused: RPCError | None = None):
        try:
            req_id, method, params, notification = parse_request(message)
        except RPCError as err:
            return error_response(
                message.get("id") if isinstance(message, dict) and _plain_id(message) else None, refused or err
            )
        try:
            result = self.call(method, params, refused)
        except RPCError as err:
            return None if notification else error_response(req_id, err)
        except Exception as exc:  # e.g. the index unreadable while looking up the caller
            log.exception("%s failed before it ran", method)
            err = RPCError(INTERNAL, f"{method} failed unexpectedly ({type(exc).__name__}); see the agent log")
            return None if notification else error_response(req_id, err)
        return None if notification else result_response(req_id, result)

    def call(self, name: str, params: dict, refused: RPCError | None = None):
        """Run one method as the current caller, or raise RPCError; audited calls and refusals are logged."""
        method = self.table.get(name)
        if method is None:
            err = RPCError(NOT_FOUND, f"unknown method {name[:64]!r}; rpc.discover lists them", code=METHOD_NOT_FOUND)
            # A name roles.py reserves above viewer (backups.run, users.*) would have changed something.
            # Unknown reads are not logged: a newer console probing an older node would fill the log.
            if required_role(name) not in (None, VIEWER):
                audit.record(self.ctx, self.ctx.caller().name, name, params, NOT_FOUND, err.message)
            raise err
        caller = self.ctx.caller()
        needed = method.role
        if not allows(caller.role, name):
            why = caller.reason or f"{caller.name} is a {caller.role}"
            err = RPCError(
                FORBIDDEN, f"{name} needs the {needed} role; {why}", {"required_role": needed, "role": caller.role}
            )
            audit.record(self.ctx, caller.name, name, params, FORBIDDEN, err.message)
            raise err
        started = time.perf_counter()
        try:
            if refused is not None:
                raise refused
            result = method.run(self.ctx, params)
        except RPCError as err:
            if method.audit:
                audit.record(self.ctx, caller.name, name, params, err.kind, err.message)
            raise
        except Exception as exc:  # a bug must not end the session; details go to stderr
            log.exception("%s failed", name)
            err = RPCError(INTERNAL, f"{name} failed unexpectedly ({type(exc).__name__}); see the agent log")
            if method.audit:
                audit.record(self.ctx, caller.name, name, params, err.kind, str(exc))
            raise err from None
        if method.audit:
            audit.record(self.ctx, caller.name, name, params, "ok")
        log.debug("%s by %s in %.1f ms", name, caller.name, (time.perf_counter() - started) * 1000)
        return result


def _plain_id(message: dict) -> bool:
    req_id = message.get("id")
    return not isinstance(req_id, bool) and isinstance(req_id, (str, int, float))


# --- the stdio loop ---------------------------------------------------------------------------


def read_line(stream: BinaryIO) -> tuple[bytes | None, bool]:
    """(line, too_long). A line over the cap is drained to its newline and reported, never buffered whole."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None, False
    if len(line) <= MAX_LINE_BYTES or (line.endswith(b"\n") and len(line) == MAX_LINE_BYTES + 1):
        return line, False
    while not line.endswith(b"\n"):
        line = stream.readline(64 * 1024)
        if not line:
            break
    return b"", True


def answer(dispatcher: Dispatcher, line: bytes):
    """The response owed for one line, or None. Never raises: no line, however built, ends the session."""
    try:
        try:
            message = decode_line(line)
        except TooDeep as err:
            # Still a call someone made: read its envelope with the deep values cut, to answer with the
            # request's id and to audit the refusal under the caller and method.
            envelope = _envelope(line)
            return error_response(None, err) if envelope is None else dispatcher.handle(envelope, refused=err)
        except RPCError as err:
            return error_response(None, err)
        return dispatcher.handle(message)
    except Exception as exc:  # the dispatcher already catches; this is the last guard
        log.exception("cannot answer a request line")
        return error_response(
            None, RPCError(INTERNAL, f"the agent failed on this line ({type(exc).__name__}); see the agent log")
        )


def _envelope(line: bytes) -> dict | list | None:
    """A too-deep line as a request (or a batch of requests) with its deep values cut; None if it is not one."""
    try:
        message = decode_line(cut_deep(line))
    except RPCError:
        return None
    if isinstance(message, dict) or (
        isinstance(message, list) and message and all(isinstance(m, dict) for m in message)
    ):
        return message
    return None


def encode_response(response) -> bytes:
    """The response as a line; one JSON cannot carry (a bug's object, too deep) becomes an internal error."""
    try:
        return encode(response)
    except Exception:  # TypeError, ValueError, RecursionError: a bug, not an exit
        log.exception("cannot encode the response")
    req_id = response.get("id") if isinstance(response, dict) and _plain_id(response) else None
    return encode(error_response(req_id, RPCError(INTERNAL, "the agent built an invalid response; see the agent log")))


def serve(ctx: AgentContext, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Answer requests until EOF. Returns the process exit code."""
    dispatcher = Dispatcher(ctx)
    log.info("agent ready: %s as %s", ctx.config_path, ctx.as_user or "the local account")
    while True:
        line, too_long = read_line(stdin)
        if line is None:
            return 0
        if too_long:
            response = error_response(
                None,
                RPCError(
                    INVALID_PARAMS, f"request line longer than {MAX_LINE_BYTES} bytes; skipped", code=INVALID_REQUEST
                ),
            )
        elif not line.strip():
            continue  # blank lines are harmless; a person typing into the pipe will send some
        else:
            response = answer(dispatcher, line)
        if response is None:
            continue
        try:
            stdout.write(encode_response(response))
            stdout.flush()
        except BrokenPipeError:
            return 0


def run_stdio(config_path: str, as_user: str | None, authorized_keys: str | None) -> int:
    """`pacsdeck agent stdio`: stdout carries only protocol lines; anything else printed goes to stderr."""
    # Keep a private handle on the real stdout, then point fd 1 at stderr: a stray print or a
    # library writing to fd 1 can then never corrupt the channel the console is parsing.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")  # buffered: it retries partial writes
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    ctx = AgentContext(config_path, as_user, authorized_keys)
    try:
        return serve(ctx, sys.stdin.buffer, protocol_out)
    except KeyboardInterrupt:
        return 130


def call_once(config_path: str, as_user: str | None, authorized_keys: str | None, method: str, params: dict) -> dict:
    """`pacsdeck agent call`: the same dispatcher as the stdio loop, for one request; returns the response."""
    ctx = AgentContext(config_path, as_user, authorized_keys)
    return Dispatcher(ctx).handle({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})

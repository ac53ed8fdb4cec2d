"""The method table: name, handler, params and result schemas, role and audit flag; plus rpc.discover and rpc.whoami."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import aliases as names
from .protocol import SCHEMA_VERSION, RPCError
from .roles import required_role
from .schema import ANY, BOOL, INT, STR, Arr, Map, Null, Obj
from .validate import invalid, reject_unknown


@dataclass(frozen=True)
class Param:
    """One named parameter as rpc.discover shows it (a JSON Schema fragment)."""

    type: str  # JSON Schema type: string, integer, number, boolean, array, object
    description: str
    required: bool = False
    extra: dict = field(default_factory=dict)  # enum, items, pattern, ...

    def schema(self) -> dict:
        return {"type": self.type, "description": self.description, **self.extra}


@dataclass(frozen=True)
class Method:
    """One JSON-RPC method. `result` is the JSON Schema of what it returns (built with agent.schema);
    every method declares one, rpc.discover publishes it, and the tests check each response against it."""

    name: str
    func: Callable  # (AgentContext, params: dict) -> dict
    summary: str
    params: dict[str, Param] = field(default_factory=dict)
    audit: bool = False  # it changes or acts on something: every call is appended to the audit log
    result: dict | None = None  # required: build_table refuses a method without one
    # Filled by build_table from agent/aliases.py: deprecated param name -> canonical name, and
    # deprecated result field path -> canonical name (the result schema then declares both).
    aliases: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str | None:
        return required_role(self.name)

    def accept_params(self, params: dict) -> tuple[dict, list[str]]:
        """The params under their canonical names, and the deprecated aliases used; unknown and missing
        names refused here, values by each handler with agent.validate."""
        params, used = names.accept(self.name, params, self.aliases)
        reject_unknown(params, set(self.params))
        for name, spec in self.params.items():
            if spec.required and params.get(name) is None:
                raise invalid(self.sent_as(name, used), "required")
        return params, used

    def sent_as(self, canonical: str, used: list[str]) -> str:
        """The name the caller used for `canonical`: its alias if that is what came in."""
        return next((a for a in used if self.aliases[a] == canonical), canonical)

    def run(self, ctx, params: dict):
        """The handler on canonical params; its result with the canonical result fields beside the
        deprecated ones, and `deprecated_params` when an alias was used. Errors name params as sent."""
        params, used = self.accept_params(params)
        try:
            result = self.func(ctx, params)
        except RPCError as err:
            raise names.as_sent(err, used, self.aliases) from None
        if self.renamed:
            result = names.with_canonical(result, self.renamed)
        if used:
            result = {**result, names.DEPRECATED_PARAMS: used}
        return result

    def describe(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "role": self.role,
            "audited": self.audit,
            "params": {
                "type": "object",
                "properties": {
                    **{n: p.schema() for n, p in self.params.items()},
                    **{a: names.param_schema(self.params[c].schema(), c) for a, c in self.aliases.items()},
                },
                "required": [n for n, p in self.params.items() if p.required],
                "additionalProperties": False,
            },
            "result": self.result,
        }


def build_table() -> dict[str, Method]:
    from . import (
        aets,
        associations,
        audit,
        backups,
        diagnose,
        health,
        logs,
        node_status,
        pools,
        preview,
        queue,
        routes,
        studies,
        users,
    )

    table: dict[str, Method] = {}
    for module in (
        node_status,
        studies,
        associations,
        audit,
        aets,
        users,
        pools,
        health,
        diagnose,
        preview,
        queue,
        routes,
        logs,
        backups,
    ):
        for m in module.METHODS:
            if m.name in table:
                raise RuntimeError(f"method {m.name} registered twice")
            table[m.name] = m
    for m in _meta_methods(table):
        table[m.name] = m
    _apply_aliases(table)
    undeclared = sorted(name for name, m in table.items() if not m.result)
    if undeclared:  # a shape nobody wrote down is a shape nobody can keep stable
        raise RuntimeError(f"no result schema declared for {', '.join(undeclared)}")
    return table


def _apply_aliases(table: dict[str, Method]) -> None:
    """agent/aliases.py's tables onto the methods; a stale entry (no such method or param) fails the build."""
    for name in sorted(set(names.PARAMS) | set(names.RESULTS)):
        method = table.get(name)
        if method is None:
            raise RuntimeError(f"aliases declared for {name}, which is no method")
        aliases = names.PARAMS.get(name, {})
        for alias, canonical in aliases.items():
            if canonical not in method.params or alias in method.params:
                raise RuntimeError(f"{name}: alias {alias} -> {canonical} does not fit the declared params")
        renamed = names.RESULTS.get(name, {})
        result = names.result_schema(name, method.result, renamed, bool(aliases)) if method.result else None
        table[name] = replace(method, aliases=dict(aliases), renamed=dict(renamed), result=result)


def _meta_methods(table: dict[str, Method]) -> tuple[Method, ...]:
    def discover(ctx, params) -> dict:
        return {"schema_version": SCHEMA_VERSION, "methods": [table[name].describe() for name in sorted(table)]}

    def whoami(ctx, params) -> dict:
        caller = ctx.caller()
        return {
            "user": caller.name,
            "role": caller.role,
            "reason": caller.reason or None,
            "config": str(ctx.config_path),
        }

    described = Obj(
        {"name": STR, "summary": STR, "role": Null(STR), "audited": BOOL, "params": Map(ANY), "result": Map(ANY)}
    )  # JSON Schema objects
    return (
        Method(
            "rpc.discover",
            discover,
            "Every method with its params and result schemas, role and audit flag",
            result=Obj({"schema_version": INT, "methods": Arr(described)}),
        ),
        Method(
            "rpc.whoami",
            whoami,
            "The caller's user name and role as this agent sees them",
            result=Obj({"user": STR, "role": Null(STR), "reason": Null(STR), "config": STR}),
        ),
    )

"""The method table: name, handler, params and result schemas, role and audit flag; plus rpc.discover and rpc.whoami."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .protocol import SCHEMA_VERSION
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

    @property
    def role(self) -> str | None:
        return required_role(self.name)

    def check_params(self, params: dict) -> None:
        """Unknown and missing names; each handler validates values with agent.validate."""
        reject_unknown(params, set(self.params))
        for name, spec in self.params.items():
            if spec.required and params.get(name) is None:
                raise invalid(name, "required")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "role": self.role,
            "audited": self.audit,
            "params": {
                "type": "object",
                "properties": {n: p.schema() for n, p in self.params.items()},
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
        diagnose,
        health,
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
    ):
        for m in module.METHODS:
            if m.name in table:
                raise RuntimeError(f"method {m.name} registered twice")
            table[m.name] = m
    for m in _meta_methods(table):
        table[m.name] = m
    undeclared = sorted(name for name, m in table.items() if not m.result)
    if undeclared:  # a shape nobody wrote down is a shape nobody can keep stable
        raise RuntimeError(f"no result schema declared for {', '.join(undeclared)}")
    return table


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

"""diagnose.run, "why can't the CT send?": our SCP's reachability, each AE's DNS/TCP/C-ECHO, recent rejections."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from storage.config.tls import client_context
from storage.dimse import echo as c_echo
from storage.index import catalog, catalog_activity
from storage.workers import running_node_pid

from . import validate as v
from .aets import ECHO_RESULT
from .associations import CONTEXT
from .protocol import SCHEMA_VERSION, iso_time
from .registry import Method, Param
from .schema import BOOL, INT, NUM, STR, TIME, Arr, Enum, Null, Obj

_MAX_PARALLEL = 8  # echoes run side by side so one silent host costs one timeout, not one per AE
WRONG_CALLED, UNKNOWN_CALLING, NO_CONTEXT, OTHER = (
    "wrong_called_ae",
    "unknown_calling_ae",
    "no_accepted_context",
    "other",
)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _local_addresses(bind: str) -> list[str]:
    """The addresses modalities could use to reach us: each interface's for a wildcard bind."""
    if bind not in ("0.0.0.0", "::"):
        return [bind]
    family = socket.AF_INET if bind == "0.0.0.0" else socket.AF_INET6
    found = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == family and not a.address.startswith("fe80"):
                found.append(a.address.split("%")[0])
    return found or (["127.0.0.1"] if family == socket.AF_INET else ["::1"])


def _connect(address: str, port: int, timeout: float) -> dict:
    started = time.perf_counter()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except OSError as err:
        return {
            "address": address,
            "reachable": False,
            "connect_ms": _ms(time.perf_counter() - started),
            "error": err.strerror or str(err),
        }
    return {"address": address, "reachable": True, "connect_ms": _ms(time.perf_counter() - started)}


def scp(node, timeout: float) -> dict:
    """Is the node listening, and does each local address reach it? (A firewall shows as unreachable
    from outside only; this looks from the node itself.)"""
    cfg = node.config
    pid = running_node_pid(cfg.node_dir)
    addresses = [_connect(a, cfg.port, timeout) for a in _local_addresses(cfg.bind)]
    listening = any(a["reachable"] for a in addresses)
    if pid is None:
        message = f"the node is not running: start it with `pacsdeck node run --config {cfg.path}`" + (
            f"; note that something else listens on port {cfg.port}" if listening else ""
        )
    elif not listening:
        message = f"the node runs (pid {pid}) but nothing accepts on port {cfg.port}: see its log and restart it"
    else:
        bad = [a["address"] for a in addresses if not a["reachable"]]
        message = f"listening on port {cfg.port} as {cfg.ae_title}" + (
            f"; not reachable on {', '.join(bad)}" if bad else f" on {len(addresses)} address(es)"
        )
        if cfg.bind in ("127.0.0.1", "::1"):
            message += "; bound to loopback only, so no other machine can reach it (set `bind` in node.yaml)"
    return {
        "ok": pid is not None and listening,
        "ae_title": cfg.ae_title,
        "port": cfg.port,
        "bind": cfg.bind,
        "node_pid": pid,
        "addresses": addresses,
        "message": message,
    }


def _dns(host: str) -> dict:
    started = time.perf_counter()
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return {
            "ok": False,
            "ms": _ms(time.perf_counter() - started),
            "addresses": [],
            "error": err.strerror,
            "message": f"{host} does not resolve ({err.strerror}): fix the name in DNS or "
            f"/etc/hosts, or register the AE by IP address (aets.update)",
        }
    addresses = list(dict.fromkeys(i[4][0] for i in infos))
    return {
        "ok": True,
        "ms": _ms(time.perf_counter() - started),
        "addresses": addresses,
        "message": f"{host} resolves to {', '.join(addresses)}",
    }


def _peer(node, aet: catalog.Aet, timeout: float) -> dict:
    entry = {"ae_title": aet.ae_title, "host": aet.host, "port": aet.port, "operations": list(aet.operations)}
    if not aet.host:
        return {
            **entry,
            "ok": None,
            "dns": None,
            "echo": None,
            "message": "no host registered: it can send to us, but nothing can be checked or sent to it",
        }
    entry["dns"] = _dns(aet.host)
    if not aet.port:
        return {
            **entry,
            "ok": None,
            "echo": None,
            "message": "no port registered: we cannot call it; set one with aets.update if we send to it",
        }
    if not entry["dns"]["ok"]:
        return {**entry, "ok": False, "echo": None, "message": entry["dns"]["message"]}
    result = c_echo.echo(
        node.config.ae_title,
        aet.ae_title,
        aet.host,
        aet.port,
        timeout,
        tls=client_context(node.config.tls) if aet.tls else None,
    )
    entry["echo"] = result
    if result["ok"]:
        message = f"C-ECHO ok in {result['total_ms']:.0f} ms (echo round trip {result['rtt_ms']:.1f} ms)"
    else:
        message = result["diagnosis"]["message"]
    return {**entry, "ok": result["ok"], "message": message}


def _kinds(a: catalog_activity.AssociationEntry) -> list[str]:
    reason = a.reason or ""
    kinds = []
    if "is not ours" in reason:
        kinds.append(WRONG_CALLED)
    if "is not registered" in reason:
        kinds.append(UNKNOWN_CALLING)
    if a.result != "rejected" and a.rejected_contexts:
        kinds.append(NO_CONTEXT)
    return kinds or [OTHER]


def _fix(kind: str, node, calling: str, called: str, hosts: list[str], contexts: list) -> str:
    cfg = node.config
    host = hosts[0] if hosts else "its address"
    if kind == WRONG_CALLED:
        return (
            f"on the sender {calling} ({', '.join(hosts)}), set the destination AE title to {cfg.ae_title} "
            f"(it used {called!r}); or, only if every sender must get in, set require_called_aet: false"
        )
    if kind == UNKNOWN_CALLING:
        params = json.dumps({"ae_title": calling, "host": host, "port": 104})
        return (
            f"register {calling}: pacsdeck agent call aets.add --params '{params}' (its real DICOM port "
            "instead of 104); it may send as soon as it is added"
        )
    if kind == NO_CONTEXT:
        syntaxes = sorted({c.get("abstract_syntax", "?") for c in contexts})
        return (
            f"{calling} proposed only what this node does not accept ({', '.join(syntaxes[:5])}): configure "
            "the sender to offer Explicit/Implicit VR Little Endian or the SOP classes it means to send"
        )
    return "the node refused it for a local limit (max_associations); raise it in node.yaml if this repeats"


def rejections(node, since_hours: float) -> list[dict]:
    """Rejected associations, and accepted ones where every proposed context was refused, grouped."""
    groups: dict = {}
    for a in catalog_activity.rejections(node.index, time.time() - since_hours * 3600):
        contexts = list(a.rejected_contexts)
        for kind in _kinds(a):
            if kind == OTHER and a.result != "rejected":
                continue
            g = groups.setdefault(
                (a.calling_ae, kind),
                {
                    "calling_ae": a.calling_ae,
                    "kind": kind,
                    "count": 0,
                    "called_aes": [],
                    "peer_hosts": [],
                    "reason": a.reason,
                    "first_at": a.started_at,
                    "last_at": a.started_at,
                    "contexts": [],
                },
            )
            g["count"] += 1
            g["last_at"] = a.started_at
            for key, value in (("called_aes", a.called_ae), ("peer_hosts", a.peer_host)):
                if value not in g[key]:
                    g[key].append(value)
            g["contexts"] = (g["contexts"] + contexts)[:20]
    out = []
    for g in sorted(groups.values(), key=lambda g: -g["last_at"]):
        g["fix"] = _fix(
            g["kind"],
            node,
            g["calling_ae"],
            g["called_aes"][-1] if g["called_aes"] else "",
            g["peer_hosts"],
            g["contexts"],
        )
        g["first_at"], g["last_at"] = iso_time(g["first_at"]), iso_time(g["last_at"])
        out.append(g)
    return out


def run(ctx, params: dict) -> dict:
    node = ctx.require_node()
    timeout = v.timeout(params.get("timeout"), default=3.0)
    since_hours = params.get("since_hours", 24)
    if isinstance(since_hours, bool) or not isinstance(since_hours, (int, float)) or not 0 < since_hours <= 24 * 90:
        raise v.invalid("since_hours", "hours from 0 to 2160")
    aets = catalog.aets(node.index)
    if params.get("ae_title") is not None:
        title = v.ae_title(params["ae_title"])
        aets = [a for a in aets if a.ae_title == title]
        if not aets:
            raise v.invalid("ae_title", f"no AE title {title!r} is registered; aets.list shows them")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=_MAX_PARALLEL) as pool:
        peer_future = [pool.submit(_peer, node, a, timeout) for a in aets]
        ours = scp(node, timeout)
        peers = [f.result() for f in peer_future]
    found = rejections(node, float(since_hours))
    problems = (
        ([ours["message"]] if not ours["ok"] else [])
        + [f"{p['ae_title']}: {p['message']}" for p in peers if p["ok"] is False]
        + [f"{g['calling_ae']} rejected {g['count']}x ({g['kind']}): {g['fix']}" for g in found]
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso_time(time.time()),
        "ok": not problems,
        "problems": problems,
        "scp": ours,
        "aets": peers,
        "rejections": found,
        "since_hours": since_hours,
        "duration_s": round(time.perf_counter() - started, 3),
    }


_DNS = Obj({"ok": BOOL, "ms": NUM, "addresses": Arr(STR), "message": STR}, {"error": Null(STR)})
_PEER = Obj(
    {
        "ae_title": STR,
        "host": Null(STR),
        "port": Null(INT),
        "operations": Arr(STR),
        "ok": Null(BOOL),  # null: nothing to check (no host or no port registered)
        "dns": Null(_DNS),
        "echo": Null(ECHO_RESULT),
        "message": STR,
    }
)
_SCP = Obj(
    {
        "ok": BOOL,
        "ae_title": STR,
        "port": INT,
        "bind": STR,
        "node_pid": Null(INT),
        "message": STR,
        "addresses": Arr(Obj({"address": STR, "reachable": BOOL, "connect_ms": NUM}, {"error": STR})),
    }
)
_REJECTION = Obj(
    {
        "calling_ae": STR,
        "kind": Enum(WRONG_CALLED, UNKNOWN_CALLING, NO_CONTEXT, OTHER),
        "count": INT,
        "called_aes": Arr(STR),
        "peer_hosts": Arr(STR),
        "reason": STR,
        "first_at": TIME,
        "last_at": TIME,
        "contexts": Arr(CONTEXT),
        "fix": STR,
    }
)
RESULT = Obj(
    {
        "schema_version": INT,
        "time": TIME,
        "ok": BOOL,
        "problems": Arr(STR),
        "scp": _SCP,
        "aets": Arr(_PEER),
        "rejections": Arr(_REJECTION),
        "since_hours": NUM,
        "duration_s": NUM,
    }
)

METHODS = (
    Method(
        "diagnose.run",
        run,
        "Why can't a modality send? Our SCP's reachability, DNS/TCP/C-ECHO to each "
        "registered AE with timing, recent association rejections grouped with the fix",
        {
            "timeout": Param("number", "seconds per network step (0.1-60, default 3)"),
            "since_hours": Param("number", "rejections from the last N hours (default 24)"),
            "ae_title": Param("string", "check only this registered AE"),
        },
        audit=True,
        result=RESULT,
    ),
)

"""Machine checks for health.check: load, memory, swap, disk I/O, sensors, SMART and the clock."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil

OK, WARN, CRIT, UNKNOWN = "ok", "warn", "crit", "unknown"
_SMART_TTL = 600.0  # SMART data changes slowly and smartctl can take seconds per disk
_SMART_TIMEOUT = 15.0


def check(name: str, status: str, value, unit: str | None, threshold: str | None, message: str, **detail) -> dict:
    """One check in the documented shape; `detail` carries extra figures (free to add, never renamed)."""
    out = {"name": name, "status": status, "value": value, "unit": unit, "threshold": threshold, "message": message}
    if detail:
        out["detail"] = detail
    return out


def load(hc) -> dict:
    cpus = os.cpu_count() or 1
    one, five, fifteen = os.getloadavg()
    per_cpu = round(five / cpus, 2)
    t = hc["load_per_cpu"]
    status = t.status(per_cpu)
    message = (
        f"5-minute load {five:.2f} on {cpus} CPUs"
        if status == OK
        else f"5-minute load {five:.2f} on {cpus} CPUs is high: find the busy process (top) before ingest slows"
    )
    return check(
        "cpu_load",
        status,
        per_cpu,
        "per_cpu",
        t.describe(),
        message,
        load1=round(one, 2),
        load5=round(five, 2),
        load15=round(fifteen, 2),
        cpus=cpus,
    )


def memory(hc) -> list[dict]:
    vm = psutil.virtual_memory()
    t = hc["memory_percent"]
    status = t.status(vm.percent)
    message = f"{vm.available / 2**30:.1f} GiB of {vm.total / 2**30:.1f} GiB available"
    if status != OK:
        message += ": something is using most of the memory; check the node's RSS and other services"
    out = [
        check(
            "memory",
            status,
            round(vm.percent, 1),
            "%",
            t.describe(),
            message,
            total_bytes=vm.total,
            available_bytes=vm.available,
        )
    ]
    sw = psutil.swap_memory()
    ts = hc["swap_percent"]
    if sw.total == 0:
        out.append(check("swap", OK, 0.0, "%", ts.describe(), "no swap configured", total_bytes=0, used_bytes=0))
    else:
        status = ts.status(sw.percent)
        message = f"{sw.used / 2**30:.1f} GiB of {sw.total / 2**30:.1f} GiB swap used"
        if status != OK:
            message += ": the machine is short of memory; add RAM or reduce other services"
        out.append(
            check(
                "swap",
                status,
                round(sw.percent, 1),
                "%",
                ts.describe(),
                message,
                total_bytes=sw.total,
                used_bytes=sw.used,
            )
        )
    return out


def io_sample() -> tuple[float, object]:
    return time.monotonic(), psutil.disk_io_counters(perdisk=False)


def disk_io(ctx, first: tuple[float, object]) -> dict:
    """Rates since the previous health.check of this agent, else over this call's own run."""
    now = io_sample()
    before = ctx.cache.get("io_sample") if ctx is not None else None
    if before is None or now[0] - before[0] < 1.0:
        before = first
    if ctx is not None:
        ctx.cache["io_sample"] = now
    errors = _io_errors()
    if now[1] is None or before[1] is None:
        return check(
            "disk_io", UNKNOWN, None, "bytes/s", None, "this system reports no disk I/O counters", io_errors=errors
        )
    window = max(now[0] - before[0], 1e-3)
    read_rate = (now[1].read_bytes - before[1].read_bytes) / window
    write_rate = (now[1].write_bytes - before[1].write_bytes) / window
    detail = {
        "read_bytes_per_s": round(read_rate),
        "write_bytes_per_s": round(write_rate),
        "window_s": round(window, 3),
        "io_errors": errors,
    }
    if errors:
        total = sum(errors.values())
        return check(
            "disk_io",
            WARN,
            total,
            "errors",
            "> 0 errors",
            f"{total} I/O errors reported since boot ({', '.join(f'{d}: {n}' for d, n in errors.items())}); "
            "check dmesg and SMART, and plan to replace the disk",
            **detail,
        )
    return check(
        "disk_io",
        OK,
        round(read_rate + write_rate),
        "bytes/s",
        None,
        f"reading {read_rate / 2**20:.1f} MiB/s, writing {write_rate / 2**20:.1f} MiB/s"
        + ("" if _has_error_counters() else "; this kernel/driver reports no per-disk error counters"),
        **detail,
    )


def _has_error_counters() -> bool:
    return any(Path("/sys/block").glob("*/device/ioerr_cnt"))


def _io_errors() -> dict:
    """SCSI/SATA disks count failed commands in /sys/block/*/device/ioerr_cnt (hex); psutil has no such figure."""
    errors = {}
    for path in Path("/sys/block").glob("*/device/ioerr_cnt"):
        try:
            count = int(path.read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        if count:
            errors[path.parent.parent.name] = count
    return errors


def sensors() -> list[dict]:
    out = []
    temps = getattr(psutil, "sensors_temperatures", lambda: {})() or {}
    readings = [(chip, s) for chip, entries in temps.items() for s in entries if s.current is not None]
    if not readings:
        out.append(
            check(
                "temperature",
                UNKNOWN,
                None,
                "°C",
                None,
                "the hardware reports no temperature sensors here (virtual machine or container?)",
            )
        )
    else:
        worst, hottest = OK, max(readings, key=lambda r: r[1].current)
        hot = []
        for chip, s in readings:
            if s.critical and s.current >= s.critical:
                worst = CRIT
                hot.append(f"{chip} {s.label or ''} {s.current:.0f}°C >= critical {s.critical:.0f}°C")
            elif s.high and s.current >= s.high:
                worst = WARN if worst == OK else worst
                hot.append(f"{chip} {s.label or ''} {s.current:.0f}°C >= high {s.high:.0f}°C")
        message = (
            f"hottest {hottest[0]} {hottest[1].label or ''} {hottest[1].current:.0f}°C".replace("  ", " ")
            if not hot
            else "; ".join(hot) + ": check fans, airflow and dust"
        )
        out.append(
            check(
                "temperature",
                worst,
                round(hottest[1].current, 1),
                "°C",
                "the sensors' own high/critical",
                message,
                sensors=[
                    {"chip": c, "label": s.label, "current": s.current, "high": s.high, "critical": s.critical}
                    for c, s in readings
                ],
            )
        )
    fans = getattr(psutil, "sensors_fans", lambda: {})() or {}
    speeds = [(chip, f) for chip, entries in fans.items() for f in entries]
    if not speeds:
        out.append(check("fans", UNKNOWN, None, "rpm", None, "the hardware reports no fan sensors here"))
    else:
        stopped = [f"{chip} {f.label or ''}".strip() for chip, f in speeds if f.current == 0]
        out.append(
            check(
                "fans",
                WARN if stopped else OK,
                min(f.current for _, f in speeds),
                "rpm",
                "> 0 rpm",
                f"fan stopped: {', '.join(stopped)}; check it before the disks overheat"
                if stopped
                else f"{len(speeds)} fans turning",
                fans=[{"chip": c, "label": f.label, "rpm": f.current} for c, f in speeds],
            )
        )
    return out


# --- SMART -----------------------------------------------------------------------------------------


def smart(ctx) -> list[dict]:
    binary = shutil.which("smartctl")
    if binary is None:
        return [
            check(
                "smart",
                UNKNOWN,
                None,
                None,
                None,
                "smartmontools is not installed, so disk SMART health is not checked; "
                "install it (apt-get install smartmontools) to get early warning of failing disks",
            )
        ]
    cached = ctx.cache.get("smart") if ctx is not None else None
    if cached and time.monotonic() - cached[0] < _SMART_TTL:
        return cached[1]
    try:
        scan = _smartctl(binary, "--scan")
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return [check("smart", UNKNOWN, None, None, None, f"smartctl --scan failed: {err}")]
    devices = [d["name"] for d in scan.get("devices", []) if d.get("name")]
    if not devices:
        result = [
            check(
                "smart",
                UNKNOWN,
                None,
                None,
                None,
                "smartctl finds no disks (virtual disks, or no permission: run the agent as root or in the disk group)",
            )
        ]
    else:
        result = [_smart_device(binary, dev) for dev in devices]
    if ctx is not None:
        ctx.cache["smart"] = (time.monotonic(), result)
    return result


def _smartctl(binary: str, *args: str) -> dict:
    proc = subprocess.run([binary, "--json=c", *args], capture_output=True, text=True, timeout=_SMART_TIMEOUT)
    return json.loads(proc.stdout or "{}")


def _smart_device(binary: str, device: str) -> dict:
    name = f"smart:{device}"
    try:
        data = _smartctl(binary, "-H", "-A", device)
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return check(name, UNKNOWN, None, None, None, f"smartctl {device} failed: {err}")
    exit_status = data.get("smartctl", {}).get("exit_status", 0)
    if exit_status & 0b11:  # bits 0-1: bad command line, or the device could not be opened
        messages = "; ".join(m.get("string", "") for m in data.get("smartctl", {}).get("messages", []))
        return check(name, UNKNOWN, None, None, None, f"smartctl cannot read {device}: {messages or exit_status}")
    passed = data.get("smart_status", {}).get("passed")
    problems, key = [], {}
    for attr in data.get("ata_smart_attributes", {}).get("table", []):
        if attr.get("id") in (5, 197, 198):  # reallocated, pending, offline-uncorrectable sectors
            raw = attr.get("raw", {}).get("value", 0)
            key[attr.get("name", str(attr.get("id")))] = raw
            if raw:
                problems.append(f"{attr.get('name')} = {raw}")
    nvme = data.get("nvme_smart_health_information_log") or {}
    if nvme:
        key.update({k: nvme.get(k) for k in ("critical_warning", "percentage_used", "media_errors")})
        if nvme.get("critical_warning"):
            passed = False
        if (nvme.get("percentage_used") or 0) >= 90:
            problems.append(f"{nvme['percentage_used']}% of rated endurance used")
        if nvme.get("media_errors"):
            problems.append(f"{nvme['media_errors']} media errors")
    temperature = data.get("temperature", {}).get("current")
    if passed is False:
        return check(
            name,
            CRIT,
            0,
            None,
            "SMART overall health passed",
            f"{device} fails its SMART self-assessment: copy its data off and replace it now",
            attributes=key,
            temperature=temperature,
        )
    if problems:
        return check(
            name,
            WARN,
            1,
            None,
            "no reallocated/pending sectors",
            f"{device}: {', '.join(problems)}; the disk is wearing out, plan a replacement",
            attributes=key,
            temperature=temperature,
        )
    return check(
        name,
        OK if passed else UNKNOWN,
        1 if passed else None,
        None,
        "SMART overall health passed",
        f"{device}: SMART health passed" if passed else f"{device}: no SMART verdict reported",
        attributes=key,
        temperature=temperature,
    )


# --- clock -----------------------------------------------------------------------------------------

_TIME_ERROR = 5  # adjtimex: the kernel clock is not synchronised (STA_UNSYNC)


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h); only the leading fields are read, the rest is room for the kernel.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def clock(hc) -> dict:
    """chrony's own offset when chronyc is there; else the kernel's NTP state (what timesyncd and
    ntpd also report through), which says "synchronised or not" and an error bound, not an offset."""
    t = hc["clock_offset_s"]
    if time.time() < 1_700_000_000:  # before November 2023: the clock was never set
        return check(
            "clock",
            CRIT,
            time.time(),
            "s",
            "a plausible date",
            "the system clock is not set (it shows a date before 2023); configure NTP (chrony) and restart the node",
        )
    chronyc = shutil.which("chronyc")
    if chronyc:
        try:
            proc = subprocess.run([chronyc, "-c", "tracking"], capture_output=True, text=True, timeout=2)
            fields = proc.stdout.strip().split(",")
            offset = abs(float(fields[4]))
            leap = fields[-1]
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
        else:
            if leap.lower().startswith("not"):
                return check(
                    "clock",
                    CRIT,
                    None,
                    "s",
                    t.describe("s"),
                    "chrony is not synchronised to any server: check `chronyc sources` and the firewall (UDP 123)",
                    source="chrony",
                )
            status = t.status(offset)
            return check(
                "clock",
                status,
                round(offset, 6),
                "s",
                t.describe("s"),
                f"chrony: offset {offset * 1000:.1f} ms"
                + ("" if status == OK else "; DICOM timestamps and TLS need a correct clock, check `chronyc sources`"),
                source="chrony",
            )
    try:
        tx = _Timex()
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return check("clock", UNKNOWN, None, "s", t.describe("s"), "cannot read the clock's NTP state here")
    if state == _TIME_ERROR or state < 0:
        return check(
            "clock",
            WARN,
            None,
            "s",
            "NTP synchronised",
            "the kernel clock is not NTP-synchronised "
            "(no chrony/ntpd/timesyncd disciplines it); install and enable chrony so study and log "
            "times stay right",
            source="adjtimex",
        )
    bound = tx.maxerror / 1e6  # microseconds
    status = t.status(bound)
    return check(
        "clock",
        status,
        round(bound, 6),
        "s",
        t.describe("s"),
        f"NTP-synchronised (error bound {bound * 1000:.1f} ms)",
        source="adjtimex",
    )

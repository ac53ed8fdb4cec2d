"""One door to pynetdicom: nothing changes on import, install() applies every adjustment, refuses an
untested release, and the agent's aets.echo runs through it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from storage import dimse

from .conftest import REPO, node_factory  # noqa: F401 - fixture


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_check_version_refuses_an_untested_release_with_what_to_do():
    dimse.check_version(dimse.TESTED_PYNETDICOM[0])
    with pytest.raises(dimse.UnsupportedPynetdicom) as err:
        dimse.check_version("9.9.9")
    message = str(err.value)
    assert "pynetdicom 9.9.9 is installed" in message
    assert f"pip install 'pynetdicom=={dimse.TESTED_PYNETDICOM[-1]}'" in message
    assert "storage/dimse/" in message


def test_importing_the_package_changes_nothing_until_install():
    out = _python("""
import json, pkgutil, importlib
import pynetdicom.association as a, pynetdicom.dul as d, pynetdicom._config as c, pynetdicom.dimse_messages as m
before = (a.Association.request, d.DULServiceProvider.run_reactor, m.encode, c.UNRESTRICTED_STORAGE_SERVICE)
import storage.dimse as door
for info in pkgutil.iter_modules(door.__path__):
    importlib.import_module(f"storage.dimse.{info.name}")
after_import = (a.Association.request, d.DULServiceProvider.run_reactor, m.encode, c.UNRESTRICTED_STORAGE_SERVICE)
door.install(); door.install()
after_install = (a.Association.request, d.DULServiceProvider.run_reactor, m.encode, c.UNRESTRICTED_STORAGE_SERVICE)
print(json.dumps({"import": after_import == before, "installed": door.installed(),
                  "changed": [x != y for x, y in zip(before, after_install)],
                  "modules": sorted({f.__module__ for f in after_install[:3]})}))
""")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["import"] is True  # importing every module of storage/dimse/ left pynetdicom as it was
    assert facts["installed"] is True and facts["changed"] == [True, True, True, True]
    assert facts["modules"] == ["storage.dimse.commands", "storage.dimse.reactors"]


def test_node_run_refuses_an_untested_pynetdicom(node_factory):
    node = node_factory()
    out = _python(f"""
import sys, pynetdicom
pynetdicom.__version__ = "9.9.9"
from pacsdeck.cli import main
sys.exit(main(["node", "run", "--config", {str(node.config)!r}]))
""")
    assert out.returncode == 1
    assert "ready" not in out.stdout
    assert "pacsdeck: pynetdicom 9.9.9 is installed" in out.stderr and "Traceback" not in out.stderr


def test_aets_echo_from_the_agent_runs_through_the_door(node_factory):
    node = node_factory()
    node.start()
    out = _python(f"""
import json
from agent.server import call_once
import pynetdicom.association as a
import storage.dimse as door
config = {str(node.config)!r}
before = door.installed()
self = {{"ae_title": {node.ae_title!r}, "host": "127.0.0.1", "port": {node.port}}}
added = call_once(config, None, None, "aets.add", self)
assert "result" in added, added
echo = call_once(config, None, None, "aets.echo", {{"ae_title": {node.ae_title!r}, "timeout": 10}})
print(json.dumps({{"before": before, "after": door.installed(), "echo": echo.get("result"),
                  "request": a.Association.request.__module__}}))
""")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["before"] is False  # the agent process had not touched pynetdicom ...
    assert facts["after"] is True and facts["request"] == "storage.dimse.reactors"  # ... aets.echo installed it
    assert facts["echo"]["ok"] is True and facts["echo"]["status"] == 0, facts["echo"]

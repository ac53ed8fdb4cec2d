"""Init, config validation, access control, startup recovery and `node reindex` on real node processes."""

from __future__ import annotations

import os
import secrets
import shutil

import pytest
import yaml

from storage import synthetic
from storage.uids import instance_path

from .conftest import dcmtk, free_port, pacsdeck, storescu, wait_for
from .test_store import assert_index_matches_disk

INSTANCE_TABLES = {
    "patients": "patient_id",
    "studies": "study_uid",
    "series": "series_uid",
    "instances": "sop_uid",
}


def snapshot(node) -> dict[str, list[tuple]]:
    return {t: [tuple(r) for r in node.rows(f"SELECT * FROM {t} ORDER BY {key}")] for t, key in INSTANCE_TABLES.items()}


# --- init and config ---------------------------------------------------------------------------


def test_init_writes_a_config_that_runs(tmp_path):
    result = pacsdeck(
        "node", "init", "--dir", str(tmp_path / "n"), "--ae-title", "CLINIC_A", "--port", str(free_port()), "--json"
    )
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load((tmp_path / "n" / "node.yaml").read_text())
    assert cfg["ae_title"] == "CLINIC_A"
    assert [p["name"] for p in cfg["pools"]] == ["primary", "archive"]
    assert (tmp_path / "n" / "pools" / "primary").is_dir() and (tmp_path / "n" / "index.sqlite").exists()
    again = pacsdeck("node", "init", "--dir", str(tmp_path / "n"))
    assert again.returncode == 0 and "already there" in again.stdout


@pytest.mark.parametrize(
    "change, field",
    [
        ({"ae_title": "A_TITLE_LONGER_THAN_16"}, "ae_title: at most 16 characters"),
        ({"ae_title": "BACK\\SLASH"}, "ae_title: only printable ASCII without backslash"),
        ({"ae_title": "   "}, "ae_title: must not be empty"),
        ({"port": 70000}, "port: must be between 1 and 65535"),
        ({"port": "104"}, "port: must be an integer"),
        ({"duplicates": "sometimes"}, "duplicates: must be one of keep, overwrite"),
        ({"pools": []}, "pools: must be a non-empty list"),
        ({"pools": [{"name": "primary", "path": "NODE_YAML", "tier": "primary"}]}, "pools[0].path: "),
        ({"pools": [{"name": "p", "path": "a"}, {"name": "p", "path": "b"}]}, "pools[1].name: duplicate pool name"),
        ({"aets": [{"ae_title": "CT1", "host": "ct; rm -rf /"}]}, "aets[0].host: not a host name"),
        ({"aets": [{"ae_title": "CT1", "operations": ["store", "delete"]}]}, "aets[0].operations[1]: unknown"),
        ({"colour": "blue"}, "unknown key(s) colour"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(tmp_path, change, field):
    node_dir = tmp_path / "n"
    node_dir.mkdir()
    cfg = {"ae_title": "PACSDECK", "port": 11112, "pools": [{"name": "primary", "path": "pools/primary"}]}
    cfg.update(change)
    if cfg["pools"] and cfg["pools"][0].get("path") == "NODE_YAML":
        cfg["pools"][0]["path"] = "node.yaml/inside"  # a file where a folder should be
    (node_dir / "node.yaml").write_text(yaml.safe_dump(cfg))
    for args in (["node", "init", "--dir", str(node_dir)], ["node", "run", "--config", str(node_dir / "node.yaml")]):
        result = pacsdeck(*args, timeout=30)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert field in result.stderr, result.stderr


def test_missing_config_and_bad_arguments(tmp_path):
    result = pacsdeck("node", "run", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "no such file" in result.stderr
    result = pacsdeck("node", "init", "--dir", str(tmp_path), "--ae-title", "WAY_TOO_LONG_AE_TITLE")
    assert result.returncode == 2 and "--ae-title" in result.stderr
    result = pacsdeck("node", "frobnicate")
    assert result.returncode == 2


# --- access control ------------------------------------------------------------------------------


def test_unknown_calling_and_wrong_called_ae_are_rejected_and_logged(node_factory):
    node = node_factory().start()
    args = ["127.0.0.1", str(node.port)]
    assert dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", node.ae_title, *args).returncode == 0
    unknown = dcmtk("echoscu", "-aet", "UNKNOWN", "-aec", node.ae_title, *args)
    assert unknown.returncode != 0 and "Association Rejected" in unknown.stdout + unknown.stderr
    wrong = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "WRONG", *args)
    assert wrong.returncode != 0 and "Association Rejected" in wrong.stdout + wrong.stderr

    rows = wait_for(
        lambda: (
            (r := node.rows("SELECT * FROM associations WHERE result='rejected' ORDER BY id")) and len(r) == 2 and r
        ),
        what="two rejections logged",
    )
    assert rows[0]["calling_ae"] == "UNKNOWN" and "'UNKNOWN' is not registered" in rows[0]["reason"]
    assert rows[1]["called_ae"] == "WRONG" and "called AE title 'WRONG' is not ours" in rows[1]["reason"]
    assert all(r["peer_host"] == "127.0.0.1" for r in rows)


def test_open_mode_accepts_unregistered_senders(node_factory, tmp_path):
    node = node_factory(aets=[], open_mode=True).start()
    assert dcmtk("echoscu", "-aet", "ANYONE", "-aec", node.ae_title, "127.0.0.1", str(node.port)).returncode == 0
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 2, rows=16, cols=16)
    results, _ = storescu(node, files, aet="MODALITY9")
    assert set(results.values()) == {"Success"}
    assert {r["source_ae"] for r in node.rows("SELECT source_ae FROM instances")} == {"MODALITY9"}


def test_registered_ae_without_store_permission_is_refused(node_factory, tmp_path):
    node = node_factory(aets=[{"ae_title": "VIEWER1", "operations": ["find", "move"]}]).start()
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 1, rows=16, cols=16)
    results, _ = storescu(node, files, aet="VIEWER1")
    assert list(results.values()) != ["Success"]
    assert node.rows("SELECT count(*) n FROM instances")[0]["n"] == 0


def test_no_registered_ae_and_closed_mode_lets_nobody_in(node_factory):
    node = node_factory(aets=[]).start()
    result = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", node.ae_title, "127.0.0.1", str(node.port))
    assert result.returncode != 0


# --- recovery and reindex ----------------------------------------------------------------------


def test_startup_removes_temp_files_and_indexes_complete_orphans(node_factory, tmp_path):
    node = node_factory().start()
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 5, rows=32, cols=32)
    storescu(node, files)
    node.stop()
    primary = node.pool_root("primary")
    study_dir = next(p for p in primary.rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    leftover = study_dir / f".{secrets.token_hex(8)}.part"
    leftover.write_bytes(b"half an instance")
    # an instance whose file was made durable but whose row never committed (crash in between)
    spec = next(synthetic.studies(1, prefix="ORPH"))
    [orphan_src] = synthetic.write_study(tmp_path / "o", spec, 1, rows=16, cols=16)
    from pydicom import dcmread

    ds = dcmread(orphan_src)
    orphan = primary / instance_path(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    orphan.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(orphan_src, orphan)

    node.start()
    assert not leftover.exists()
    rows = assert_index_matches_disk(node)
    assert len(rows) == 6
    assert str(ds.SOPInstanceUID) in {r["sop_uid"] for r in rows}
    assert "orphans_indexed': 1" in node.log_text()


def test_reindex_rebuilds_the_same_rows_from_the_pools(node_factory, tmp_path):
    node = node_factory().start()
    for i, spec in enumerate(synthetic.studies(3)):
        files = synthetic.write_study(tmp_path / f"s{i}", spec, 7, rows=16, cols=16, series=2)
        storescu(node, files)
    node.stop()
    before = snapshot(node)
    assert len(before["instances"]) == 21
    os.unlink(node.index_path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(node.index_path) + suffix):
            os.unlink(str(node.index_path) + suffix)
    result = pacsdeck("node", "reindex", "--config", str(node.config), "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(node) == before


# --- processes -----------------------------------------------------------------------------------


def test_workers_share_the_port_and_stop_with_the_node(node_factory, tmp_path):
    import psutil

    node = node_factory(workers=2).start()
    workers = psutil.Process(node.proc.pid).children()
    assert len(workers) == 2
    assert (node.dir / "node.lock").read_text().strip() == str(node.proc.pid)
    second = pacsdeck("node", "run", "--config", str(node.config), timeout=30)
    assert second.returncode == 1 and "another node is running" in second.stderr
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 4, rows=16, cols=16)
    for f in files:  # one association each: the kernel spreads them over the workers
        results, _ = storescu(node, [f])
        assert list(results.values()) == ["Success"]
    assert len(assert_index_matches_disk(node)) == 4
    node.stop()
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE


def test_a_dead_worker_stops_the_node_with_an_error(node_factory):
    import psutil

    node = node_factory(workers=2).start()
    worker = psutil.Process(node.proc.pid).children()[0]
    worker.kill()
    assert node.proc.wait(timeout=30) == 1
    assert "stopping the node" in node.log_text()


def test_single_worker_mode(node_factory, tmp_path):
    node = node_factory(workers=1).start()
    import psutil

    assert psutil.Process(node.proc.pid).children() == []
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 3, rows=16, cols=16)
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    assert len(assert_index_matches_disk(node)) == 3


def test_rejected_presentation_contexts_are_logged(node_factory):
    """What support staff need when a modality 'cannot send': which of its contexts we refused."""
    from pynetdicom import AE

    node = node_factory().start()
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification: accepted
    ae.add_requested_context("1.2.840.10008.5.1.4.31")  # Modality Worklist FIND: not offered here
    ae.add_requested_context("1.3.6.1.4.1.9590.100.1.2.999")  # a vendor's private storage class: kept
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    assert "1.3.6.1.4.1.9590.100.1.2.999" in [str(cx.abstract_syntax) for cx in assoc.accepted_contexts]
    assoc.release()
    [row] = wait_for(lambda: node.rows("SELECT * FROM associations WHERE calling_ae='ECHOSCU'"), what="log row")
    import json

    rejected = json.loads(row["rejected_contexts"])
    assert [c["abstract_syntax"] for c in rejected] == ["1.2.840.10008.5.1.4.31"]
    assert rejected[0]["reason"] == "abstract-syntax-not-supported"


def test_a_second_node_on_the_same_port_is_refused(node_factory):
    """Two nodes must never share a port (each would get some of the other's associations)."""
    first = node_factory("first").start()
    for workers in (1, 2):
        second = node_factory(f"second{workers}", workers=workers)
        cfg = yaml.safe_load(second.config.read_text())
        cfg["port"] = first.port
        second.config.write_text(yaml.safe_dump(cfg))
        result = pacsdeck("node", "run", "--config", str(second.config), timeout=30)
        assert result.returncode == 1, result.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in result.stderr
    assert dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", first.ae_title, "127.0.0.1", str(first.port)).returncode == 0


def test_the_example_node_yaml_is_valid(tmp_path):
    """configs/node.example.yaml parses (its absolute pool paths moved under a temporary folder)."""
    from storage.config.settings import parse_config

    from .conftest import REPO

    data = yaml.safe_load((REPO / "configs" / "node.example.yaml").read_text())
    for pool in data["pools"]:
        pool["path"] = str(tmp_path / pool["path"].lstrip("/"))
    config = parse_config(data, tmp_path / "node.yaml", create_dirs=True)
    assert [p.name for p in config.pools] == ["primary", "archive"]
    assert [a.ae_title for a in config.aets] == ["CT1", "READING1"]

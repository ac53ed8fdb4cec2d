"""restic targets with the real `restic` program: a local repository and an `sftp:` one on the loopback sshd,
each restored into a node that holds the same instances; a wrong password fails clearly, with no secret shown."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from .agent_support import os_user, ssh_keygen, start_sshd, stop_sshd
from .conftest import IN_CI, make_node, storescu
from .test_backups import call, index_rows, ok, studies

SECRET = "correct horse battery staple 42"


def restic_binary() -> str:
    found = shutil.which("restic")
    if found is None:
        if IN_CI:
            pytest.fail("restic is not installed (apt-get install restic)")
        pytest.skip("restic is not installed")
    return found


def password_file(folder, secret: str = SECRET):
    path = folder / "restic-password"
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    return path


def backed_up_and_restored(node, tmp_path) -> None:
    results, _ = storescu(node, studies(tmp_path, "RS", 2, per=3))
    assert set(results.values()) == {"Success"}
    first = ok(node, "backups.run", {"wait": True})["backup"]
    assert first["type"] == "restic" and first["instances"] == 6
    results, _ = storescu(node, studies(tmp_path, "RT", 1, per=2))
    assert set(results.values()) == {"Success"}
    second = ok(node, "backups.run", {"wait": True})["backup"]
    assert second["instances"] == 8
    listed = [b["id"] for b in ok(node, "backups.list")["backups"]]
    assert listed == [second["id"], first["id"]]
    verified = ok(node, "backups.verify", {"id": second["id"]})
    assert verified["ok"] and verified["checked"] == 8
    restored = ok(node, "backups.restore", {"id": second["id"], "into": str(tmp_path / "restored")})
    assert restored["instances"] == 8
    assert index_rows(tmp_path / "restored" / "index.sqlite") == index_rows(node.index_path)
    first_restored = ok(node, "backups.restore", {"id": first["id"], "into": str(tmp_path / "first")})
    assert first_restored["instances"] == 6


def test_a_local_restic_repository(tmp_path):
    restic_binary()
    node = make_node(
        tmp_path / "node",
        ae_title="RESTIC",
        workers=1,
        backups=[
            {
                "name": "offsite",
                "type": "restic",
                "repository": str(tmp_path / "repo"),
                "password_file": str(password_file(tmp_path)),
            }
        ],
    ).start()
    try:
        backed_up_and_restored(node, tmp_path)
        assert (tmp_path / "repo" / "config").exists()  # restic's own layout: encrypted, nothing readable
        assert not list((tmp_path / "repo").rglob("*.dcm"))
    finally:
        node.stop()


def test_an_sftp_restic_repository_on_the_loopback_sshd(tmp_path):
    restic_binary()
    server = start_sshd(tmp_path / "sshd")
    try:
        key = tmp_path / "backup_ed25519"
        public = ssh_keygen(key)
        with open(server.authorized_keys, "a") as f:
            f.write(public + "\n")  # a plain key: sftp needs no forced command
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.port} {server.host_key_line}\n")
        command = (
            f"ssh -p {server.port} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={known} {os_user()}@127.0.0.1 -s sftp"
        )
        node = make_node(
            tmp_path / "node",
            ae_title="SFTPBK",
            workers=1,
            backups=[
                {
                    "name": "offsite",
                    "type": "restic",
                    "repository": f"sftp:{os_user()}@127.0.0.1:{tmp_path / 'remote-repo'}",
                    "password_file": str(password_file(tmp_path)),
                    "options": [f"sftp.command={command}"],
                }
            ],
        ).start()
        try:
            backed_up_and_restored(node, tmp_path)
            assert (tmp_path / "remote-repo" / "config").exists()
        finally:
            node.stop()
    finally:
        stop_sshd(server)


def test_a_wrong_password_fails_clearly_and_no_secret_is_shown(tmp_path):
    restic_binary()
    node = make_node(
        tmp_path / "node",
        ae_title="WRONGPW",
        workers=1,
        backups=[
            {
                "name": "offsite",
                "type": "restic",
                "repository": str(tmp_path / "repo"),
                "password_file": str(password_file(tmp_path)),
            }
        ],
    ).start()
    try:
        results, _ = storescu(node, studies(tmp_path, "PW", 1, per=2))
        assert set(results.values()) == {"Success"}
        ok(node, "backups.run", {"wait": True})
        password_file(tmp_path, "not the password at all")
        refused = call(node, "backups.run", {"wait": True})
        assert "wrong password" in refused["error"]["message"]
        os.chmod(tmp_path / "restic-password", 0o644)
        loose = call(node, "backups.run", {"wait": True})
        assert "readable by others" in loose["error"]["message"] and "chmod 600" in loose["error"]["message"]
        jobs = ok(node, "queue.list", {"kind": "backup"})["jobs"]
        audit = ok(node, "audit.recent", {"method": "backups.run"})
        seen = json.dumps([refused, loose, jobs, audit, ok(node, "backups.list")]) + (node.dir / "node.log").read_text()
        for secret in (SECRET, "not the password at all"):
            assert secret not in seen
    finally:
        node.stop()

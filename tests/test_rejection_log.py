"""Every refused association is one warning in the node's log and one row in its association log, whichever
of pynetdicom's rejection and connection-close events comes first."""

from __future__ import annotations

import sqlite3

import pytest

from .conftest import dcmtk, make_node, wait_for

TRIES = 8


@pytest.mark.parametrize("workers", [1, 2])
def test_each_refused_association_is_logged_once(tmp_path, workers):
    node = make_node(tmp_path / "node", ae_title="REJNODE", workers=workers).start()
    try:
        for _ in range(TRIES):
            done = dcmtk("echoscu", "-aet", "NOBODY", "-aec", "REJNODE", "127.0.0.1", str(node.port))
            assert done.returncode != 0  # refused: NOBODY is not registered

        def rows() -> int:
            conn = sqlite3.connect(f"file:{node.index_path}?mode=ro", uri=True)
            try:
                return conn.execute(
                    "SELECT count(*) FROM associations WHERE calling_ae='NOBODY' AND result='rejected'"
                ).fetchone()[0]
            finally:
                conn.close()

        wait_for(lambda: rows() == TRIES, what=f"{TRIES} rejected associations in the index")
        lines = [
            line for line in node.log_path.read_text().splitlines() if "association rejected: calling 'NOBODY'" in line
        ]
        assert len(lines) == TRIES, lines
        assert all("is not registered; add it with aets.add" in line for line in lines)
    finally:
        node.stop()

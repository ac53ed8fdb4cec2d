"""`pacsdeck preview` and preview.render on instances stored in a real node, through the real CLI and agent."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from pydicom import dcmread

from storage import synthetic
from storage.imaging.encoders import ASCII_RAMP

from .agent_support import agent_env, agents  # noqa: F401 - fixture
from .conftest import pacsdeck, storescu
from .test_preview import TEST_FILES


def _stored_ct(node_factory, tmp_path):
    node = node_factory().start()
    files = synthetic.write_study(tmp_path / "s", next(synthetic.studies(1)), 1, rows=128, cols=128)
    results, _ = storescu(node, files)
    assert set(results.values()) == {"Success"}
    return node, files[0], str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)


def test_cli_preview_of_a_file_and_of_a_stored_uid(node_factory, tmp_path):
    node, path, uid = _stored_ct(node_factory, tmp_path)
    by_file = pacsdeck("preview", str(path), "--mode", "ascii", "--width", "40")
    assert by_file.returncode == 0, by_file.stderr
    *picture, caption = by_file.stdout.rstrip("\n").split("\n")
    assert len(picture) == 20 and all(len(line) == 40 and set(line) <= set(ASCII_RAMP) for line in picture)
    assert "window 40,400 (file)" in caption and "ascii 40x20 cells" in caption
    assert picture[10][20] != " " and picture[0][0] == " "  # the body disc is in the middle, air in the corner

    by_uid = pacsdeck("preview", uid, "--config", str(node.config), "--mode", "ascii", "--width", "40")
    assert by_uid.returncode == 0, by_uid.stderr
    assert by_uid.stdout.split("\n")[:20] == picture

    # Not a terminal and no --mode: ASCII, so cron mail and logs stay readable.
    env_mode = pacsdeck("preview", str(path), "--width", "20")
    assert env_mode.returncode == 0 and set(env_mode.stdout.split("\n")[0]) <= set(ASCII_RAMP)


def test_cli_preview_errors_are_one_line(node_factory, tmp_path):
    node = node_factory()
    for args, code, text in [
        ((str(TEST_FILES / "rtplan.dcm"),), 1, "no pixel data"),
        ((str(TEST_FILES / "CT_small.dcm"), "--frame", "2"), 2, "frame 2: this instance has 1 frame"),
        ((str(TEST_FILES / "CT_small.dcm"), "--window", "40"), 2, "expected CENTER,WIDTH"),
        (("1.2.3.4", "--config", str(node.config)), 1, "no instance 1.2.3.4 in this node's index"),
        ((str(tmp_path / "missing.dcm"),), 2, "no such file, and not a SOP Instance UID"),
    ]:
        result = pacsdeck("preview", *args, "--mode", "ascii")
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("pacsdeck: ") and text in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_preview_render_through_the_agent(node_factory, agents, tmp_path):
    node, path, uid = _stored_ct(node_factory, tmp_path)
    env = agent_env(tmp_path / "keys")
    agents(node.config, env=env).call("users.add", {"name": "vic", "role": "viewer"})
    viewer = agents(node.config, as_user="vic", env=env)

    png = viewer.call("preview.render", {"sop_instance_uid": uid, "pixel_width": 64, "pixel_height": 64})
    image = Image.open(io.BytesIO(base64.b64decode(png["png"])))
    assert (image.mode, image.size) == ("L", (64, 64))
    assert (png["window"], png["window_source"], png["frames"]) == ({"center": 40.0, "width": 400.0}, "file", 1)
    assert np.asarray(image)[32, 32] > np.asarray(image)[0, 0]  # tissue brighter than air
    # What the console's study screen does with it: a Rich renderable for its own terminal.
    from rich.console import Console

    from console.preview_renderable import renderable

    out = Console(file=io.StringIO(), width=20, force_terminal=True, color_system="truecolor")
    out.print(renderable(png, width=20))
    assert out.file.getvalue().count("\n") == 10  # 20 cells of 10x20 pixels: a square image is 10 rows

    text = viewer.call("preview.render", {"sop_instance_uid": uid, "mode": "ascii", "columns": 40})
    cli = pacsdeck("preview", str(path), "--mode", "ascii", "--width", "40")
    assert text["text"] == cli.stdout[: len(text["text"])] and (text["columns"], text["rows"]) == (40, 20)
    sixel = viewer.call(
        "preview.render", {"sop_instance_uid": uid, "mode": "sixel", "columns": 10, "window": "-600,1500"}
    )
    assert sixel["text"].startswith("\x1bP") and '"1;1;100;100' in sixel["text"]
    assert sixel["window"] == {"center": -600.0, "width": 1500.0}

    for params, kind, field in [
        ({"sop_instance_uid": "1.2.3.4"}, "not_found", "sop_instance_uid"),
        ({"sop_instance_uid": uid, "frame": 2}, "invalid_params", "frame"),
        ({"sop_instance_uid": uid, "window": "wide"}, "invalid_params", "window"),
        ({"sop_instance_uid": uid, "mode": "jpeg"}, "invalid_params", "mode"),
        ({"sop_instance_uid": "../etc/passwd"}, "invalid_params", "sop_instance_uid"),
    ]:
        err = viewer.error("preview.render", params)
        assert (err.kind, err.data.get("field")) == (kind, field), (params, err.message)

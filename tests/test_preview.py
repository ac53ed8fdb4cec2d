"""The preview pipeline and encoders on real files: pydicom's corpus, known HU values, sixel read back by libsixel."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from storage import synthetic
from storage.imaging import encoders
from storage.imaging.preview import PreviewError, Window, display_aspect, read, render

from .conftest import IN_CI, REPO, require_tool

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
COMPRESSED_FAMILIES = {  # transfer syntax prefix -> family, for the report
    "1.2.840.10008.1.2.4.5": "JPEG baseline/extended",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless",
    "1.2.840.10008.1.2.4.8": "JPEG-LS",
    "1.2.840.10008.1.2.4.9": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE",
}
# Files pydicom ships *because* they are broken, each with the specific error it must give.
KNOWN_BAD = {
    "JPEG-lossy.dcm": ("undecodable", "misplaced marker"),  # pylibjpeg rejects its scan header (GDCM copes)
    "JPEG2000-embedded-sequence-delimiter.dcm": ("undecodable", "failed to read the header"),
    "MR_truncated.dcm": ("undecodable", "less than expected"),
    "badVR.dcm": ("undecodable", "invalid literal"),
    "meta_missing_tsyntax.dcm": ("undecodable", "Transfer Syntax UID"),
    "nested_priv_SQ.dcm": ("undecodable", "Bits Allocated"),
    "no_meta.dcm": ("unreadable", "not a DICOM file"),  # one private element, nothing else
}
REASONS = {"no_pixel_data", "undecodable", "unreadable", "unsupported"}


def ct(values_hu: np.ndarray, *, slope: float = 1.0, intercept: float = -1024.0, **extra) -> Dataset:
    """A synthetic CT whose stored values make exactly `values_hu` after the modality LUT."""
    spec = next(synthetic.studies(1))
    ds = synthetic.instance(spec, series_uid=generate_uid(), sop_uid=generate_uid(), number=1, rows=8, cols=8)
    stored = np.rint((np.asarray(values_hu, dtype=np.float64) - intercept) / slope).astype(np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def linear_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of pydicom, to 8 bits."""
    c, w = center - 0.5, width - 1
    y = ((hu - c) / w + 0.5) * 255
    y = np.where(hu <= c - w / 2, 0, np.where(hu > c + w / 2, 255, y))
    return np.rint(y).astype(np.uint8)


HU = np.array([[-1000, -160, -159, 0, 40, 100, 239, 240, 1000, 3000]], dtype=np.float64)
# The same values by hand at window 40/400, the soft-tissue window a radiologist would pick.
EXPECTED_40_400 = [0, 0, 1, 102, 128, 166, 255, 255, 255, 255]


# --- pipeline --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["override", "file"])
def test_window_maps_known_hu_to_expected_grey(how):
    if how == "override":
        image = render(ct(HU, WindowCenter=1000, WindowWidth=10), window=Window(40, 400))
    else:
        image = render(ct(HU, WindowCenter=40, WindowWidth=400))
    assert image.window_source == how and image.window == Window(40, 400)
    assert image.pixels.tolist() == [EXPECTED_40_400]
    assert image.pixels.tolist() == linear_window(HU, 40, 400).tolist()


def test_rescale_slope_and_intercept_are_applied():
    # Stored values differ completely from HU with slope 2 / intercept -2048; the grey values must not.
    ds = ct(HU, slope=2.0, intercept=-2048.0, WindowCenter=40, WindowWidth=400)
    stored = ds.pixel_array.astype(np.float64)
    assert stored.tolist() != HU.tolist()
    hu = stored * 2 - 2048  # HU -159 is not representable at slope 2: it is stored as -160
    assert render(ds).pixels.tolist() == linear_window(hu, 40, 400).tolist()
    assert render(ds).pixels.tolist() == [[0, 0, 0, 102, 128, 166, 255, 255, 255, 255]]
    lung = render(ds, window=Window.parse("-600,1500")).pixels
    assert lung.tolist() == linear_window(hu, -600, 1500).tolist()


def test_monochrome1_is_inverted():
    normal = render(ct(HU, WindowCenter=40, WindowWidth=400))
    inverse = render(ct(HU, WindowCenter=40, WindowWidth=400, PhotometricInterpretation="MONOCHROME1"))
    assert inverse.inverted and not normal.inverted
    assert inverse.pixels.tolist() == [[255 - v for v in EXPECTED_40_400]]


def test_automatic_window_spans_the_image_without_outliers():
    hu = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64)
    hu[0, 0] = 30000  # one hot pixel must not flatten everything else to black
    del_window = ct(hu)
    del del_window.WindowCenter, del_window.WindowWidth
    image = render(del_window)
    assert image.window_source == "auto"
    assert image.pixels[0, 1] <= 3 and image.pixels[-1, -1] >= 252
    assert 118 <= image.pixels[32, 0] <= 138  # the middle of the ramp is mid grey


def test_multiframe_picks_the_frame_and_refuses_a_bad_one():
    frames = np.stack([np.full((4, 4), v) for v in (-1000, 40, 1000)])
    ds = ct(frames.reshape(12, 4), WindowCenter=40, WindowWidth=400)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 4, 3
    assert [int(render(ds, frame=n).pixels.mean()) for n in (1, 2, 3)] == [0, 128, 255]
    with pytest.raises(PreviewError, match=r"frame 4: this instance has 3 frames \(1 to 3\)") as err:
        render(ds, frame=4)
    assert err.value.reason == "bad_frame"


def test_aspect_ratio_from_pixel_spacing():
    ds = ct(np.zeros((100, 100)), PixelSpacing=[1.0, 0.5])  # rows 1 mm apart, columns 0.5 mm: twice as tall
    assert display_aspect(ds) == 2.0
    assert render(ds, box=(50, 50)).size == (25, 50)
    assert render(ct(np.zeros((100, 200))), box=(50, 50)).size == (50, 25)


def test_colour_files():
    palette = render(read(TEST_FILES / "examples_palette.dcm"))
    assert palette.pixels.ndim == 3 and palette.window_source == "none"
    assert len(np.unique(palette.pixels.reshape(-1, 3), axis=0)) > 10  # real colours, not one grey
    rgb = render(read(TEST_FILES / "SC_rgb_rle.dcm")).pixels
    ybr = render(read(TEST_FILES / "SC_ybr_full_422_uncompressed.dcm")).pixels
    assert rgb.shape == ybr.shape == (100, 100, 3)
    # The same picture: YBR_FULL_422 converted to RGB must land on the RGB original's colours.
    assert np.abs(rgb.astype(int) - ybr.astype(int)).mean() < 3


def test_no_pixel_data_and_not_dicom(tmp_path):
    with pytest.raises(PreviewError, match="no pixel data") as err:
        render(read(TEST_FILES / "rtplan.dcm"))
    assert err.value.reason == "no_pixel_data"
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image\n" * 20)
    with pytest.raises(PreviewError, match="not a") as err:
        render(read(junk))
    assert err.value.reason == "unreadable"


def test_missing_codec_names_the_extra():
    # A process without pylibjpeg: the JPEG-LS decoder is unavailable, as on a node without the extra.
    code = (
        "import sys; sys.modules['pylibjpeg'] = None\n"
        "from storage.imaging.preview import read, render, PreviewError\n"
        f"try:\n    render(read({str(TEST_FILES / 'MR_small_jpeg_ls_lossless.dcm')!r}))\n"
        "except PreviewError as err:\n    print(err.reason, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.startswith("codec_missing "), out.stdout + out.stderr
    assert "JPEG-LS" in out.stdout and "pacsdeck[codecs]" in out.stdout


def test_every_pydicom_test_file_renders_or_says_why(record_property):
    rows, failures = [], []
    files = sorted(TEST_FILES.rglob("*.dcm"))
    assert len(files) > 50
    for path in files:
        syntax = ""
        try:
            ds = read(path)
            syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
            image = render(ds, box=(64, 64))
            outcome = (
                f"ok {image.size[0]}x{image.size[1]} {'rgb' if image.pixels.ndim == 3 else 'grey'} "
                f"{image.window_source}"
            )
            if path.name in KNOWN_BAD:
                failures.append(f"{path.name}: expected to fail, rendered")
        except PreviewError as err:
            outcome = f"{err.reason}: {err}"
            expected = KNOWN_BAD.get(path.name)
            if err.reason not in REASONS or len(str(err)) < 20:
                failures.append(f"{path.name}: vague error {outcome}")
            elif expected and (err.reason != expected[0] or expected[1] not in str(err)):
                failures.append(f"{path.name}: expected {expected}, got {outcome}")
            elif not expected and err.reason != "no_pixel_data":
                failures.append(f"{path.name}: unexpected failure {outcome}")
        family = next((f for p, f in COMPRESSED_FAMILIES.items() if syntax.startswith(p)), "")
        rows.append(f"{path.relative_to(TEST_FILES)} [{family or syntax or 'no meta'}]: {outcome}")
    summary = "\n".join(rows)
    record_property("summary", summary)  # printed at the end of the run by conftest's terminal summary
    print(summary)
    assert not failures, "\n".join(failures)
    rendered = {r.split(" [")[1].split("]")[0] for r in rows if "]: ok " in r}
    assert {"JPEG baseline/extended", "JPEG lossless", "JPEG-LS", "JPEG 2000", "RLE"} <= rendered


# --- encoders --------------------------------------------------------------------------------


def test_ascii_ramp_of_a_known_gradient():
    levels = ((np.arange(10) * 256 + 128) // 10).astype(np.uint8)  # the centre of each ramp step
    assert encoders.ascii_ramp(np.tile(levels, (2, 1))) == " .:-=+*#%@\n" * 2
    assert encoders.ascii_ramp(np.array([[0, 255]], np.uint8)) == " @\n"


@pytest.mark.parametrize("encoder", ["libsixel", "textual-image"])
def test_sixel_reads_back_with_libsixel(tmp_path, encoder):
    """Both encoders: libsixel's C encoder for grey images, textual-image's as the fallback."""
    sixel2png = require_tool("sixel2png")
    ds = ct(np.add.outer(np.linspace(-1000, 1000, 300), np.linspace(-500, 500, 400)), WindowCenter=0, WindowWidth=2000)
    image = render(ds, box=(200, 150))
    assert image.size == (200, 150)
    if encoder == "libsixel":
        text = encoders._libsixel_grey(image.pixels)
        if text is None:  # libsixel1 comes with libsixel-bin, which .ci/run installs
            (pytest.fail if IN_CI else pytest.skip)("libsixel is not installed (apt-get install libsixel-bin)")
        assert text == encoders.sixel(image.pixels)  # grey images take this path
    else:
        from textual_image._sixel import image_to_sixels

        text = image_to_sixels(Image.fromarray(image.pixels))
    (tmp_path / "in.six").write_text(text)
    subprocess.run(
        [sixel2png, "-i", str(tmp_path / "in.six"), "-o", str(tmp_path / "out.png")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    back = Image.open(tmp_path / "out.png").convert("L")
    assert back.size == (200, 150)
    error = np.abs(np.asarray(back, dtype=int) - image.pixels.astype(int))
    # Sixel colours are percentages (101 levels): at most ~1.3 grey levels off, never a shifted image.
    assert error.mean() < 1.0 and error.max() <= 2, (error.mean(), error.max())


def test_cell_layouts_keep_proportions():
    ds = ct(np.zeros((512, 512)), PixelSpacing=[0.7, 0.7])
    for mode, rows in (("halfcell", 20), ("ascii", 20), ("sixel", 20), ("kitty", 20)):
        image, where, text = encoders.render_text(ds, mode, 40, cell=(10, 20))
        assert (where.columns, where.rows) == (40, rows), mode
    image, where, text = encoders.render_text(ds, "halfcell", 40, cell=(10, 20))
    lines = text.rstrip("\n").split("\n")
    assert image.size == (40, 40) and len(lines) == 20 and all(line.count("▀") == 40 for line in lines)
    _, where, _ = encoders.render_text(ds, "ascii", 200, max_rows=10, cell=(10, 20))
    assert (where.columns, where.rows) == (20, 10)  # a short terminal narrows the image instead


def test_kitty_is_a_png_in_chunks():
    pixels = np.random.default_rng(1).integers(0, 256, (300, 300), dtype=np.uint8)  # incompressible
    text = encoders.kitty(pixels, columns=30)
    assert text.startswith("\x1b_Ga=T,f=100,q=2,c=30,m=1;") and text.endswith("\x1b\\\n")
    payload = "".join(part.split(";", 1)[1] for part in text.strip().split("\x1b\\") if part)
    import base64

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(payload)))), pixels)


def test_mode_detection():
    pipe = io.StringIO()
    assert encoders.detect_mode("auto", env={}, stream=pipe) == "ascii"  # a log gets text
    assert encoders.detect_mode("auto", env={encoders.MODE_ENV: "halfcell"}, stream=pipe) == "halfcell"
    assert encoders.detect_mode("sixel", env={encoders.MODE_ENV: "halfcell"}, stream=pipe) == "sixel"
    with pytest.raises(encoders.EncodeError, match="PACSDECK_PREVIEW_MODE"):
        encoders.detect_mode("auto", env={encoders.MODE_ENV: "jpeg"}, stream=pipe)

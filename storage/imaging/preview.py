"""The preview pipeline: a DICOM dataset to an 8-bit grey or RGB image the size of a target box."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID

CODECS_HINT = "install the codec extra: pip install 'pacsdeck[codecs]'"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Percentiles of the modality values that make the automatic window: robust to the padding and
# the odd hot pixel that would make a min/max window useless.
AUTO_PERCENTILES = (0.5, 99.5)
# Above this many pixels the automatic window looks at a strided sample; a few hundred thousand
# values pin the percentiles as well as millions do.
_SAMPLE_PIXELS = 1 << 18
# A lookup table over every possible stored value is cheaper than per-pixel float maths up to here.
_MAX_LUT_BITS = 16


class PreviewError(Exception):
    """What cannot be rendered, in a sentence a person can act on, and a stable reason for programs."""

    # Reasons: unreadable, no_pixel_data, bad_frame, bad_window, codec_missing, undecodable, unsupported
    def __init__(self, message: str, reason: str = "undecodable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (e.g. HU): center and width, PS3.3 C.11.2.1.2."""

    center: float
    width: float

    @classmethod
    def parse(cls, text: str) -> Window:
        """'C,W' as people type it: '40,400' or '-600,1500'."""
        parts = text.replace(" ", "").split(",")
        try:
            center, width = (float(p) for p in parts)
        except ValueError:
            raise PreviewError(f"window {text!r}: expected CENTER,WIDTH, e.g. 40,400", "bad_window") from None
        return cls.checked(center, width)

    @classmethod
    def checked(cls, center: float, width: float) -> Window:
        if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
            raise PreviewError(f"window {center},{width}: the width must be a number >= 1", "bad_window")
        return cls(float(center), float(width))


@dataclass(frozen=True)
class Preview:
    """An 8-bit image ready for an encoder, and how it was made (for captions and the agent)."""

    pixels: np.ndarray  # uint8, (rows, cols) grey or (rows, cols, 3) RGB
    frame: int  # 1-based, as DICOM numbers frames
    frames: int
    window: Window | None  # None: colour, or a VOI LUT sequence
    window_source: str  # "override", "file", "voi_lut", "auto", "none"
    source_size: tuple[int, int]  # (columns, rows) in the file
    inverted: bool  # MONOCHROME1 or an INVERSE presentation LUT

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def display_aspect(ds: Dataset) -> float:
    """Physical height / width of one pixel: PixelSpacing is (row spacing, column spacing)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "PixelAspectRatio"):
        value = ds.get(keyword)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return row / col
    return 1.0


def fit(source: tuple[int, int], aspect: float, box: tuple[int, int]) -> tuple[int, int]:
    """The largest (width, height) inside box with the physical proportions of the source, never upscaled."""
    width, height = source[0], source[1] * aspect
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_frame(ds: Dataset, frame: int = 1) -> np.ndarray:
    """The stored values of one frame (1-based), decoded by pydicom's pixel handlers; RGB for YBR."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise PreviewError(
            "no pixel data: this instance is not an image (e.g. a structured report or presentation state)",
            "no_pixel_data",
        )
    frames = frame_count(ds)
    if isinstance(frame, bool) or not isinstance(frame, int) or not 1 <= frame <= frames:
        raise PreviewError(
            f"frame {frame}: this instance has {frames} frame{'s' * (frames > 1)} (1 to {frames})", "bad_frame"
        )
    syntax = _transfer_syntax(ds)
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise PreviewError(
                f"transfer syntax {syntax.name} ({syntax}): pydicom has no decoder for it", "unsupported"
            ) from None
        if not decoder.is_available:
            raise PreviewError(
                f"transfer syntax {syntax.name} ({syntax}) needs a decoder that is not installed; {CODECS_HINT}",
                "codec_missing",
            )
    try:
        # One frame only: a 2,000-frame cine loop is not decoded to look at one picture.
        return pixel_array(ds, index=frame - 1 if frames > 1 else None)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError, TypeError, EOFError) as err:
        name = syntax.name if syntax is not None else "unknown transfer syntax"
        raise PreviewError(f"pixel data cannot be decoded ({name}): {_first_line(err)}") from None


def read(path) -> Dataset:
    """A DICOM file, including the old ones without a preamble; anything else is a PreviewError."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        try:
            return dcmread(path)
        except InvalidDicomError:
            ds = dcmread(path, force=True)  # no 128-byte preamble: files from before Part 10
    except (OSError, ValueError, EOFError, KeyError, TypeError, NotImplementedError) as err:
        raise PreviewError(f"{path}: not a readable DICOM file: {_first_line(err)}", "unreadable") from None
    if "SOPClassUID" not in ds and not any(k in ds for k in _PIXEL_KEYWORDS):
        raise PreviewError(f"{path}: not a DICOM file", "unreadable")
    return ds


def instance_path(node, sop_instance_uid: str):
    """Where the node's index says an instance is, in whichever pool or tier."""
    row = node.index.instance(sop_instance_uid)
    if row is None:
        raise LookupError(f"no instance {sop_instance_uid} in this node's index")
    pool = node.placement.pool(row["pool"])
    if pool is None:
        raise LookupError(f"instance {sop_instance_uid} is in pool {row['pool']!r}, which node.yaml no longer has")
    return pool.file(row["path"])


def render(
    ds: Dataset,
    *,
    frame: int = 1,
    window: Window | None = None,
    box: tuple[int, int] | None = None,
    exact: bool = False,
) -> Preview:
    """The whole pipeline. `box` is (width, height) in pixels; `exact` stretches to it (for cell grids)."""
    arr = load_frame(ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    inverted = False
    used: Window | None = None
    if samples == 1 and photometric == "PALETTE COLOR":
        pixels, source = _palette(arr, ds), "none"
    elif samples == 1:
        pixels, used, source = _grey(arr, ds, window)
        inverted = photometric == "MONOCHROME1"
        if str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
            inverted = not inverted
        if inverted:
            np.subtract(255, pixels, out=pixels)
    elif samples == 3:
        pixels, source = _colour(arr, ds), "none"
    else:
        raise PreviewError(
            f"{samples} samples per pixel ({photometric}) is not an image this preview can show", "unsupported"
        )
    rows, cols = pixels.shape[:2]
    if box is not None:
        target = box if exact else fit((cols, rows), display_aspect(ds), box)
        pixels = resize(pixels, target)
    return Preview(
        pixels=np.ascontiguousarray(pixels),
        frame=frame,
        frames=frame_count(ds),
        window=used,
        window_source=source,
        source_size=(cols, rows),
        inverted=inverted,
    )


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average down (no aliasing on a 3000-pixel CR), bicubic up; Pillow does both in C."""
    from PIL import Image

    if (pixels.shape[1], pixels.shape[0]) == tuple(size):
        return pixels
    image = Image.fromarray(pixels)
    shrinking = size[0] < image.width and size[1] < image.height
    # reducing_gap: a fast integer box reduction first, then an exact filter on the rest.
    out = image.resize(
        size, Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC, reducing_gap=3.0 if shrinking else None
    )
    return np.asarray(out)


# --- grey --------------------------------------------------------------------------------------


def _grey(arr: np.ndarray, ds: Dataset, override: Window | None) -> tuple[np.ndarray, Window | None, str]:
    """Modality LUT, then VOI (override, file window, VOI LUT sequence or automatic) -> uint8."""
    if arr.ndim != 2:
        raise PreviewError(f"unexpected pixel array shape {arr.shape} for one grey frame")
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and int(ds.get("BitsStored", 16) or 16) <= _MAX_LUT_BITS:
        # Every possible stored value through the same pydicom functions once, then a gather:
        # exactly the per-pixel result, ~10x faster on a 3000x2500 CR.
        low = int(arr.min())
        ramp = np.arange(low, int(arr.max()) + 1, dtype=np.int64 if arr.dtype.kind == "i" else np.uint32)
        table, used, source = _grey_values(ramp, ds, override, sample=lambda: _sample(arr))
        return table[arr.astype(np.intp, copy=False) - low], used, source
    return _grey_values(arr, ds, override, sample=lambda: _sample(arr))


def _grey_values(
    values: np.ndarray, ds: Dataset, override: Window | None, sample
) -> tuple[np.ndarray, Window | None, str]:
    modality = apply_modality_lut(values, ds)
    if override is not None:
        return _window(modality, override, ds), override, "override"
    window = _file_window(ds)
    if window is not None:
        return _window(modality, window, ds), window, "file"
    if ds.get("VOILUTSequence"):
        try:
            out = apply_voi_lut(modality, ds, prefer_lut=True)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise PreviewError(f"VOI LUT sequence unusable: {_first_line(err)}") from None
        return _to_uint8(out, _lut_max(ds, out)), None, "voi_lut"
    stored = sample()
    values_for_window = apply_modality_lut(stored, ds).astype(np.float64, copy=False)
    finite = values_for_window[np.isfinite(values_for_window)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8), None, "none"
    lo, hi = np.percentile(finite, AUTO_PERCENTILES)
    if hi <= lo:  # a flat image: show it mid-grey rather than dividing by zero
        lo, hi = lo - 0.5, hi + 0.5
    auto = Window(center=float(lo + hi) / 2, width=max(1.0, float(hi - lo)))
    return _window(modality, auto, ds), auto, "auto"


def _window(values: np.ndarray, window: Window, ds: Dataset) -> np.ndarray:
    """pydicom's windowing (LINEAR, LINEAR_EXACT, SIGMOID) with its output range set to 0..255."""
    from pydicom.pixels import apply_windowing

    voi = Dataset()
    # An 8-bit unsigned, rescale-free frame makes apply_windowing's output range exactly 0..255.
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 8, 0
    voi.WindowCenter, voi.WindowWidth = window.center, window.width
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    voi.VOILUTFunction = function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"
    try:
        out = apply_windowing(np.asarray(values, dtype=np.float64), voi)
    except ValueError as err:
        raise PreviewError(f"window {window.center},{window.width}: {_first_line(err)}", "bad_window") from None
    return _to_uint8(out, 255)


def _file_window(ds: Dataset) -> Window | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    # VM > 1: several alternative windows; the first is the one the modality meant as default.
    center = center[0] if _multi(center) else center
    width = width[0] if _multi(width) else width
    try:
        return Window.checked(float(center), float(width))
    except (TypeError, ValueError, PreviewError):
        return None  # an unusable window in the file: fall back to the automatic one


def _multi(value) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__")


def _lut_max(ds: Dataset, out: np.ndarray) -> int:
    # Descriptors often claim 16 bits for 12-bit data (PS3.3 C.11.2.1.1 allows it): trust the data.
    bits = max(1, int(np.max(out)).bit_length()) if out.size else 8
    return (1 << bits) - 1


def _sample(arr: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(arr.size / _SAMPLE_PIXELS)))
    return arr[::step, ::step]


def _to_uint8(values: np.ndarray, maximum: float) -> np.ndarray:
    scaled = np.asarray(values, dtype=np.float64) * (255.0 / maximum) if maximum != 255 else np.asarray(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- colour ------------------------------------------------------------------------------------


def _palette(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    try:
        rgb = apply_color_lut(arr, ds)
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        raise PreviewError(f"palette colour lookup tables unusable: {_first_line(err)}") from None
    # Palette entries are 8 or 16 bits (descriptor); scale from what the tables really hold.
    return _to_uint8(rgb, 255 if rgb.max(initial=0) <= 255 else 65535)


def _colour(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB out: pydicom has already converted YBR_FULL(_422) to RGB while decoding."""
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise PreviewError(f"unexpected pixel array shape {arr.shape} for one colour frame")
    bits = int(ds.get("BitsStored", 8) or 8)
    if arr.dtype == np.uint8:
        return arr
    return _to_uint8(arr.astype(np.float64), (1 << bits) - 1)


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(value)) if value else None


def _first_line(err: BaseException) -> str:
    """The error on one line: pydicom lists each plugin's reason on its own line, and those are the useful part."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    return text if len(text) <= 400 else text[:397] + "..."

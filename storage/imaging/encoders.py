"""8-bit preview images to terminal text: sixel, kitty, half-cell (textual-image), an ASCII ramp; mode detection."""

from __future__ import annotations

import base64
import io
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

MODES = ("sixel", "kitty", "halfcell", "ascii")
MODE_ENV = "PACSDECK_PREVIEW_MODE"
# VT340 cell metrics, textual-image's own fallback when a terminal does not say.
DEFAULT_CELL = (10, 20)
# Dark to bright for a dark-background terminal; 10 steps so every step is a distinct glyph weight.
ASCII_RAMP = " .:-=+*#%@"
_KITTY_CHUNK = 4096  # the kitty graphics protocol's maximum payload per escape sequence


class EncodeError(ValueError):
    """An unknown mode or an impossible size."""


@dataclass(frozen=True)
class Layout:
    """Where an image goes: a grid of terminal cells and the pixel box the encoder fills."""

    mode: str
    columns: int
    rows: int
    box: tuple[int, int]  # (width, height) in image pixels
    exact: bool  # the image fills the box exactly (True for every terminal mode; the PNG only fits inside)


def layout(
    mode: str,
    source: tuple[int, int],
    aspect: float,
    columns: int,
    max_rows: int | None = None,
    cell: tuple[int, int] = DEFAULT_CELL,
    upscale: bool = True,
) -> Layout:
    """Cells and pixels for `mode` so the image keeps its physical proportions.

    `source` is (columns, rows) of the frame, `aspect` the height/width of one pixel (PixelSpacing).
    Without `upscale`, sixel and kitty stop at the frame's own width: no invented pixels, and a
    512-pixel CT costs what 512 pixels cost.
    """
    if mode not in MODES:
        raise EncodeError(f"mode {mode!r}: one of {', '.join(MODES)}")
    if columns < 1 or (max_rows is not None and max_rows < 1):
        raise EncodeError("the preview needs at least one column and one row")
    cw, ch = cell
    ratio = source[1] * aspect / source[0]  # physical height / width

    def rows_for(cols: int) -> float:
        return cols * cw * ratio / ch

    if max_rows is not None and rows_for(columns) > max_rows:
        columns = max(1, math.floor(max_rows * ch / (ratio * cw)))
    if mode in ("sixel", "kitty"):
        # Pixel-exact: the terminal places the image by pixels, only the row count is rounded up.
        # A small image is scaled up to the columns asked for, as a viewer zooms to fit.
        width = columns * cw if upscale else min(columns * cw, source[0])
        columns = math.ceil(width / cw)
        height = max(1, round(width * ratio))
        return Layout(mode, columns, max(1, math.ceil(height / ch)), (width, height), exact=True)
    rows = max(1, round(rows_for(columns)))
    if max_rows is not None:
        rows = min(rows, max_rows)
    # Cell modes stretch by at most half a cell: the price of a character grid.
    height = rows * 2 if mode == "halfcell" else rows
    return Layout(mode, columns, rows, (columns, height), exact=True)


def encode(pixels: np.ndarray, mode: str) -> str:
    """The text to write to a terminal; `pixels` is uint8 grey or RGB already at the layout's box."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise EncodeError(f"expected a uint8 grey or RGB image, got {pixels.dtype} {pixels.shape}")
    if mode == "sixel":
        return sixel(pixels)
    if mode == "kitty":
        return kitty(pixels)
    if mode == "halfcell":
        return halfcell(pixels)
    if mode == "ascii":
        return ascii_ramp(pixels)
    raise EncodeError(f"mode {mode!r}: one of {', '.join(MODES)}")


def sixel(pixels: np.ndarray) -> str:
    """A sixel DCS sequence: libsixel for grey images when it is installed, else textual-image.

    Grey images (nearly every preview) go to libsixel's C encoder with its built-in 256-grey
    palette, through libsixel's own Python binding: 25 ms for a 512x512 CT against 53 ms in
    textual-image's Python encoder, same grey levels (Debian package libsixel1, which libsixel-bin
    pulls in). Colour images, and machines without libsixel, use textual-image.
    """
    if pixels.ndim == 2:
        encoded = _libsixel_grey(pixels)
        if encoded is not None:
            return encoded
    # image_to_sixels is the encoder under textual-image's Sixel renderable. The renderable itself
    # resizes to its own idea of the cell size and writes cursor moves for a Rich layout, neither
    # of which suits a pixel-exact image printed to a plain terminal or returned by the agent.
    from textual_image._sixel import image_to_sixels

    return image_to_sixels(_pil(pixels))


def _libsixel_grey(pixels: np.ndarray) -> str | None:
    try:
        import libsixel as ls
    except (ImportError, OSError):  # the binding or the C library is missing
        return None
    chunks: list[bytes] = []
    output = ls.sixel_output_new(lambda data, _priv: chunks.append(data))
    try:
        dither = ls.sixel_dither_get(ls.SIXEL_BUILTIN_G8)
        ls.sixel_dither_set_pixelformat(dither, ls.SIXEL_PIXELFORMAT_G8)
        data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        status = ls.sixel_encode(data, pixels.shape[1], pixels.shape[0], 1, dither, output)
    finally:
        ls.sixel_output_unref(output)
    if ls.SIXEL_FAILED(status):
        return None
    return b"".join(chunks).decode("ascii")


def kitty(pixels: np.ndarray, columns: int | None = None) -> str:
    """Kitty graphics protocol, direct transmission of a PNG (f=100), displayed at the cursor (a=T)."""
    # textual-image's TGP renderable writes the image straight to sys.__stdout__ and places it with
    # Unicode placeholders only kitty itself draws: unusable for the agent's result or a log. The
    # protocol's transmit-and-display form is a few lines.
    payload = base64.standard_b64encode(png(pixels, compress_level=1)).decode("ascii")
    chunks = [payload[i : i + _KITTY_CHUNK] for i in range(0, len(payload), _KITTY_CHUNK)] or [""]
    out = []
    for i, chunk in enumerate(chunks):
        more = 1 if i < len(chunks) - 1 else 0
        keys = f"a=T,f=100,q=2{f',c={columns}' if columns else ''},m={more}" if i == 0 else f"m={more}"
        out.append(f"\x1b_G{keys};{chunk}\x1b\\")
    return "".join(out) + "\n"


def halfcell(pixels: np.ndarray) -> str:
    """Upper-half blocks, foreground the top pixel and background the bottom one, via textual-image + Rich."""
    from rich.console import Console
    from textual_image.renderable.halfcell import Image as HalfcellImage

    height, width = pixels.shape[:2]
    if height % 2:  # two pixel rows per cell row
        pixels = np.concatenate([pixels, pixels[-1:]])
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        no_color=False,
        highlight=False,
        soft_wrap=False,
    )
    console.print(HalfcellImage(_pil(pixels), width=width, height=pixels.shape[0] // 2), end="")
    return buffer.getvalue()


def ascii_ramp(pixels: np.ndarray) -> str:
    """One character per pixel from ASCII_RAMP by brightness: readable in any terminal, log or e-mail."""
    grey = _luma(pixels)
    ramp = np.frombuffer(ASCII_RAMP.encode("ascii"), dtype=np.uint8)
    index = (grey.astype(np.uint16) * len(ASCII_RAMP)) >> 8
    chars = ramp[index]
    lines = np.concatenate([chars, np.full((chars.shape[0], 1), ord("\n"), np.uint8)], axis=1)
    return lines.tobytes().decode("ascii")


def png(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """An 8-bit grey or RGB PNG: what the agent sends the console, which encodes for its own terminal."""
    buffer = io.BytesIO()
    _pil(pixels).save(buffer, format="png", compress_level=compress_level)
    return buffer.getvalue()


def _pil(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels), mode="L" if pixels.ndim == 2 else "RGB")


def _luma(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    # ITU-R BT.601 weights, as Pillow's convert("L") uses.
    return np.rint(pixels[..., :3] @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)


# --- the terminal ------------------------------------------------------------------------------


def detect_mode(requested: str = "auto", env: dict | None = None, stream=None) -> str:
    """The mode to use: an explicit one, else $PACSDECK_PREVIEW_MODE, else what the terminal says it can do."""
    env = os.environ if env is None else env
    stream = sys.stdout if stream is None else stream
    if requested != "auto":
        if requested not in MODES:
            raise EncodeError(f"mode {requested!r}: one of auto, {', '.join(MODES)}")
        return requested
    forced = env.get(MODE_ENV, "").strip().lower()
    if forced and forced != "auto":
        if forced not in MODES:
            raise EncodeError(f"${MODE_ENV}={forced!r}: one of auto, {', '.join(MODES)}")
        return forced
    if not _isatty(stream) or env.get("TERM", "") in ("", "dumb"):
        return "ascii"  # a pipe, a log file, cron mail: nothing there can draw pixels
    if env.get("KITTY_WINDOW_ID") or "kitty" in env.get("TERM", "") or env.get("TERM_PROGRAM") == "ghostty":
        return "kitty"
    return _ask_terminal()


def _ask_terminal() -> str:
    """textual-image's own probe (device attributes for sixel, a kitty graphics query) on import."""
    try:
        from textual_image import renderable
    except Exception:  # noqa: BLE001 - a terminal that answers garbage must not stop a preview
        return "halfcell"
    chosen = renderable.Image
    if chosen is renderable.SixelImage:
        return "sixel"
    if chosen is renderable.TGPImage:
        return "kitty"
    return "halfcell"


def terminal_cell_size(stream=None) -> tuple[int, int]:
    """Pixels per cell from the tty (TIOCGWINSZ), else the VT340 default textual-image also assumes."""
    stream = sys.stdout if stream is None else stream
    if _isatty(stream):
        try:
            import fcntl
            import struct
            import termios

            rows, cols, xpix, ypix = struct.unpack("HHHH", fcntl.ioctl(stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols and xpix and ypix:
                return xpix // cols, ypix // rows
        except (OSError, ImportError, ValueError):
            pass
    return DEFAULT_CELL


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def render_text(
    ds,
    mode: str,
    columns: int,
    *,
    max_rows: int | None = None,
    cell: tuple[int, int] = DEFAULT_CELL,
    frame: int = 1,
    window=None,
    upscale: bool = True,
):
    """Dataset -> (Preview, Layout, text): the pipeline and the encoder in the sizes the mode needs."""
    from .preview import display_aspect, render

    source = (int(ds.get("Columns") or 1), int(ds.get("Rows") or 1))
    where = layout(mode, source, display_aspect(ds), columns, max_rows, cell, upscale)
    image = render(ds, frame=frame, window=window, box=where.box, exact=where.exact)
    if mode == "kitty":
        return image, where, kitty(image.pixels, where.columns)
    return image, where, encode(image.pixels, mode)

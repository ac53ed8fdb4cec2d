"""preview.render: one stored instance as terminal text (sixel, kitty, half-cell, ASCII) or a small 8-bit PNG."""

from __future__ import annotations

import base64

from storage.imaging import encoders
from storage.imaging.preview import PreviewError, Window, instance_path, read, render

from . import validate as v
from .protocol import INVALID_PARAMS, NOT_FOUND, UNAVAILABLE, RPCError
from .registry import Method, Param
from .schema import BOOL, INT, NUM, STR, Enum, Null, Obj

MODES = ("png", *encoders.MODES)
MAX_COLUMNS = 400
MAX_PIXELS = 2048
# A PNG for the console's study screen: big enough for a panel, small enough for an SSH round trip.
DEFAULT_PIXELS = 512
# What the caller's terminal should have done about the error (reason -> kind); the reason travels too.
_KINDS = {
    "bad_frame": INVALID_PARAMS,
    "bad_window": INVALID_PARAMS,
    "no_pixel_data": INVALID_PARAMS,
    "unsupported": UNAVAILABLE,
    "codec_missing": UNAVAILABLE,
    "undecodable": UNAVAILABLE,
    "unreadable": UNAVAILABLE,
}
_FIELDS = {"bad_frame": "frame", "bad_window": "window", "no_pixel_data": "SOPInstanceUID"}


def _int(params: dict, name: str, low: int, high: int, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise v.invalid(name, f"an integer from {low} to {high}")
    return value


def _window(value) -> Window | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            # Parsed to two numbers at once, never used as text: a leading "-" (a lung window) is fine.
            return Window.parse(v.safe_text(value, "window", max_len=64, allow_punctuation=True))
        if isinstance(value, dict) and set(value) == {"center", "width"}:
            center, width = value["center"], value["width"]
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (center, width)):
                return Window.checked(center, width)
    except PreviewError as err:
        raise v.invalid("window", str(err)) from None
    raise v.invalid("window", '\'CENTER,WIDTH\' or {"center": C, "width": W} in modality units (e.g. HU)')


def render_instance(ctx, params: dict) -> dict:
    node = ctx.require_node()
    uid = v.uid(params.get("SOPInstanceUID"), "SOPInstanceUID")
    mode = params.get("mode", "png")
    if mode not in MODES:
        raise v.invalid("mode", f"one of {', '.join(MODES)}")
    frame = _int(params, "frame", 1, 1_000_000, 1)
    window = _window(params.get("window"))
    columns = _int(params, "columns", 1, MAX_COLUMNS, 80)
    rows = _int(params, "rows", 1, MAX_COLUMNS, None)
    cell = params.get("cell_size", list(encoders.DEFAULT_CELL))
    if (
        not isinstance(cell, list)
        or len(cell) != 2
        or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 64 for c in cell)
    ):
        raise v.invalid("cell_size", "[width, height] of a terminal cell in pixels, each 1 to 64")
    box = (
        _int(params, "pixel_width", 1, MAX_PIXELS, DEFAULT_PIXELS),
        _int(params, "pixel_height", 1, MAX_PIXELS, DEFAULT_PIXELS),
    )
    try:
        path = instance_path(node, uid)
    except LookupError as err:
        raise RPCError(NOT_FOUND, str(err), {"field": "SOPInstanceUID"}) from None
    try:
        ds = read(path)
        if mode == "png":
            image = render(ds, frame=frame, window=window, box=box)
            result = {"png": base64.b64encode(encoders.png(image.pixels)).decode("ascii")}
        else:
            image, where, text = encoders.render_text(
                ds,
                mode,
                columns,
                max_rows=rows,
                cell=tuple(cell),
                frame=frame,
                window=window,
                upscale=params.get("columns") is not None,
            )
            result = {"text": text, "columns": where.columns, "rows": where.rows}
    except PreviewError as err:
        data = {"reason": err.reason}
        if err.reason in _FIELDS:
            data["field"] = _FIELDS[err.reason]
        raise RPCError(_KINDS.get(err.reason, UNAVAILABLE), f"{uid}: {err}", data) from None
    result.update(
        {
            "sop_instance_uid": uid,
            "mode": mode,
            "width": image.size[0],
            "height": image.size[1],
            "frame": image.frame,
            "frames": image.frames,
            "window": None if image.window is None else {"center": image.window.center, "width": image.window.width},
            "window_source": image.window_source,
            "inverted": image.inverted,
            "source_width": image.source_size[0],
            "source_height": image.source_size[1],
            "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "",
        }
    )
    return result


RESULT = Obj(
    {
        "sop_instance_uid": STR,
        "mode": Enum(*MODES),
        "width": INT,
        "height": INT,
        "frame": INT,
        "frames": INT,
        "window": Null(Obj({"center": NUM, "width": NUM})),
        "window_source": Enum("override", "file", "voi_lut", "auto", "none"),
        "inverted": BOOL,
        "source_width": INT,
        "source_height": INT,
        "transfer_syntax": STR,
    },
    {
        "png": STR,  # mode png: the image, base64
        "text": STR,
        "columns": INT,
        "rows": INT,  # the text modes: what to print, and the cells it covers
    },
)

METHODS = (
    Method(
        "preview.render",
        render_instance,
        "One instance as an 8-bit PNG (base64) or as text for a terminal: sixel, kitty, halfcell, ascii",
        {
            "SOPInstanceUID": Param("string", "the instance to show", required=True),
            "mode": Param("string", "png (default, for the console) or terminal text", extra={"enum": list(MODES)}),
            "frame": Param("integer", "1-based frame number of a multi-frame instance (default 1)"),
            "window": Param(
                "string",
                "'CENTER,WIDTH' in modality units (e.g. '40,400'); default: the file's "
                "window, its VOI LUT, else an automatic one",
            ),
            "columns": Param(
                "integer",
                f"text modes: width in terminal cells (max {MAX_COLUMNS}); default 80, "
                "and sixel/kitty then stop at the image's own width",
            ),
            "rows": Param("integer", "text modes: at most this many cell rows"),
            "cell_size": Param(
                "array",
                "text modes: [width, height] of a cell in pixels (default [10, 20])",
                extra={"items": {"type": "integer"}},
            ),
            "pixel_width": Param("integer", f"png: fit inside this width (default {DEFAULT_PIXELS}, max {MAX_PIXELS})"),
            "pixel_height": Param("integer", f"png: fit inside this height (default {DEFAULT_PIXELS})"),
        },
        result=RESULT,
    ),
)

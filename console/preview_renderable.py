"""The console's image of an instance: the PNG that preview.render returns, as a textual-image Rich renderable."""

from __future__ import annotations

import base64
import binascii
import io

from agent.protocol import ProtocolError

from .results import read


class PreviewUnavailable(ValueError):
    """The agent's answer holds no usable image."""


def preview_params(
    sop_instance_uid: str, *, frame: int = 1, window: str | None = None, pixel_width: int = 512, pixel_height: int = 512
) -> dict:
    """The preview.render params the console sends: a PNG, encoded here for the console's own terminal."""
    params = {
        "SOPInstanceUID": sop_instance_uid,
        "mode": "png",
        "frame": frame,
        "pixel_width": pixel_width,
        "pixel_height": pixel_height,
    }
    if window:
        params["window"] = window
    return params


def renderable(result, width: int | str | None = "auto", height: int | str | None = "auto"):
    """A Rich renderable for a preview.render result; textual-image picks sixel, kitty or half-cell itself.

    `width`/`height` follow textual-image: cells as int, "50%", "auto", or None for the image's own size.
    """
    from PIL import Image as PILImage
    from textual_image.renderable import Image

    try:
        preview = read("preview.render", result)
    except ProtocolError as err:
        raise PreviewUnavailable(f"the agent's preview has no PNG image: {err}") from None
    if preview.png is None:
        raise PreviewUnavailable("the agent's preview has no PNG image: no png in the answer")
    try:
        image = PILImage.open(io.BytesIO(base64.b64decode(preview.png, validate=True)))
        image.load()
    except (binascii.Error, OSError) as err:
        raise PreviewUnavailable(f"the agent's preview has no PNG image: {err}") from None
    return Image(image, width=width, height=height)

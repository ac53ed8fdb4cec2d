"""`pacsdeck preview`: one image in the terminal (sixel, kitty, half-cell blocks or ASCII)."""

from __future__ import annotations

import os
import re
import shutil
import sys

from .cli_common import CONFIG_HELP, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CLIError, config_path, out


def _node(args):
    from storage.config.settings import load_config
    from storage.node import Node

    return Node(load_config(config_path(args)))


def cmd_preview(args) -> int:
    from storage.imaging import encoders
    from storage.imaging.preview import PreviewError, Window, instance_path, read

    target = args.target
    try:
        window = Window.parse(args.window) if args.window else None
        mode = encoders.detect_mode(args.mode)
        if os.path.exists(target):
            path = target
        elif re.fullmatch(r"[0-9]+(\.[0-9]+)+", target):
            try:
                path = instance_path(_node(args), target)
            except LookupError as err:
                raise CLIError(str(err)) from None
        else:
            raise CLIError(f"{target}: no such file, and not a SOP Instance UID", EXIT_USAGE)
        size = shutil.get_terminal_size((80, 24)) if sys.stdout.isatty() else None
        columns = args.width or (max(1, size.columns - 1) if size else 80)
        # On a screen the whole image should be visible without scrolling; in a log the width decides.
        max_rows = max(1, size.lines - 2) if size and not args.width else None
        image, where, text = encoders.render_text(
            read(path),
            mode,
            columns,
            max_rows=max_rows,
            cell=encoders.terminal_cell_size(),
            frame=args.frame,
            window=window,
            upscale=bool(args.width),
        )
    except (PreviewError, encoders.EncodeError) as err:
        usage = isinstance(err, encoders.EncodeError) or err.reason in ("bad_frame", "bad_window")
        raise CLIError(str(err), EXIT_USAGE if usage else EXIT_FAILURE) from None
    out(text, end="")
    w = image.window
    window_text = f"window {w.center:g},{w.width:g} ({image.window_source})" if w else image.window_source
    if image.window_source == "none":
        window_text = "colour"
    out(
        f"{os.path.basename(str(path))}: frame {image.frame}/{image.frames}, {image.source_size[0]}x"
        f"{image.source_size[1]}, {window_text}{', inverted' if image.inverted else ''}, {mode} "
        f"{where.columns}x{where.rows} cells"
    )
    return EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser("preview", help="one image in the terminal: sixel, kitty, half-cell blocks or ASCII")
    p.add_argument("target", metavar="FILE|SOPInstanceUID", help="a DICOM file, or an instance in the node's index")
    p.add_argument("--frame", type=int, default=1, help="frame number of a multi-frame instance (1-based; default 1)")
    p.add_argument(
        "--window",
        metavar="C,W",
        help="window center,width in modality units, e.g. 40,400 "
        "(default: the file's window, its VOI LUT, else automatic)",
    )
    p.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "sixel", "kitty", "halfcell", "ascii"],
        help="how to draw it (default auto: $PACSDECK_PREVIEW_MODE, else what the terminal supports; "
        "ascii when not a terminal)",
    )
    p.add_argument("--width", type=int, metavar="COLS", help="width in terminal columns (default: the terminal's)")
    p.add_argument("--config", help=CONFIG_HELP + "; only for a SOPInstanceUID")
    p.set_defaults(func=cmd_preview)

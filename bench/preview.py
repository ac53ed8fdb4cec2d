"""Preview speed: a 512x512 CT and a 3000x2500 CR to sixel and half-cell, against img2sixel and chafa (same PNG)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom import dcmread
from pydicom.uid import generate_uid

from storage import synthetic
from storage.imaging import encoders
from storage.imaging.preview import render

CELL = (10, 20)  # the VT340 cell both textual-image and chafa assume when a terminal does not say
IMAGES = {"CT 512x512": ("CT", 512, 512), "CR 3000x2500": ("CR", 2500, 3000)}


def median_ms(func, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def run_tool(args: list[str]) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def bench_image(folder: Path, label: str, modality: str, rows: int, cols: int, columns: int, runs: int) -> dict:
    spec = next(synthetic.studies(1))
    ds = synthetic.instance(
        spec, series_uid=generate_uid(), sop_uid=generate_uid(), number=1, rows=rows, cols=cols, modality=modality
    )
    path = folder / f"{modality}.dcm"
    ds.save_as(path, enforce_file_format=True)
    # The competitors get our 8-bit rendering at full size: they only resize and encode.
    png = folder / f"{modality}.png"
    png.write_bytes(encoders.png(render(dcmread(path)).pixels, compress_level=1))
    out: dict = {"image": label, "file_bytes": path.stat().st_size, "columns": columns}
    for mode in ("sixel", "halfcell"):
        # Everything `pacsdeck preview` does after start-up: read, decode, LUTs, resize, encode; as
        # without --width, sixel stops at the image's own width (512 px for the CT).
        out[f"pacsdeck_{mode}_ms"] = median_ms(
            lambda m=mode: encoders.render_text(dcmread(path), m, columns, cell=CELL, upscale=False), runs
        )
    _, where, text = encoders.render_text(dcmread(path), "sixel", columns, cell=CELL, upscale=False)
    out["sixel_pixels"] = list(where.box)
    out["sixel_bytes"] = len(text)
    # With --width the image is scaled up to fill the columns: what that costs on the CT.
    _, full, _ = encoders.render_text(dcmread(path), "sixel", columns, cell=CELL, upscale=True)
    if full.box != where.box:
        out["pacsdeck_sixel_upscaled_ms"] = median_ms(
            lambda: encoders.render_text(dcmread(path), "sixel", columns, cell=CELL, upscale=True), runs
        )
        out["sixel_upscaled_pixels"] = list(full.box)
    out["img2sixel_ms"] = (
        median_ms(lambda: run_tool(["img2sixel", "-w", str(where.box[0]), str(png)]), runs)
        if shutil.which("img2sixel")
        else None
    )
    if shutil.which("chafa"):
        size = f"{columns}x{where.rows}"
        out["chafa_sixel_ms"] = median_ms(lambda: run_tool(["chafa", "-f", "sixels", "-s", size, str(png)]), runs)
        out["chafa_halfcell_ms"] = median_ms(
            lambda: run_tool(["chafa", "-f", "symbols", "--symbols", "vhalf", "-c", "full", "-s", size, str(png)]), runs
        )
    else:
        out["chafa"] = "not installed (Debian: apt-get install chafa); skipped"
    # The whole command, interpreter start-up included, as a person at a prompt sees it.
    out["cli_sixel_ms"] = median_ms(
        lambda: run_tool(
            [sys.executable, "-m", "pacsdeck.cli", "preview", str(path), "--mode", "sixel", "--width", str(columns)]
        ),
        max(3, runs // 4),
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="runs per measurement; the median is reported")
    parser.add_argument("--columns", type=int, default=80, help="terminal columns (cells of 10x20 pixels)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = [bench_image(Path(scratch), label, *spec, args.columns, args.runs) for label, spec in IMAGES.items()]
    for r in results:
        print(
            f"{r['image']}: pacsdeck sixel {r['pacsdeck_sixel_ms']} ms ({r['sixel_pixels'][0]}x"
            f"{r['sixel_pixels'][1]} px, {r['sixel_bytes']} bytes), halfcell {r['pacsdeck_halfcell_ms']} ms; "
            f"img2sixel {r['img2sixel_ms']} ms; chafa sixel {r.get('chafa_sixel_ms', '-')} ms, "
            f"halfcell {r.get('chafa_halfcell_ms', '-')} ms; `pacsdeck preview` whole command {r['cli_sixel_ms']} ms"
            + (f"; chafa {r['chafa']}" if "chafa" in r else "")
            + (
                f"; pacsdeck sixel scaled up to {r['sixel_upscaled_pixels'][0]}x{r['sixel_upscaled_pixels'][1]} "
                f"{r['pacsdeck_sixel_upscaled_ms']} ms"
                if "pacsdeck_sixel_upscaled_ms" in r
                else ""
            )
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "cell": CELL, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

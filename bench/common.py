"""Shared helpers: paths, generated inputs, statistics and Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
INPUTS = WORK / "inputs"
LOGS = WORK / "logs"
RESULTS = BENCH / "results"
TESTIMAGES = ROOT / "tests" / "fixtures" / "exif-orientation"  # in the repository
SOURCE_PHOTO = TESTIMAGES / "Landscape_1.jpg"  # 1800x1200, EXIF orientation 1

BOXES = (50, 200, 1024)
JPEG_QUALITY = 85

# name -> (width, height, format).  Upscaled from the 1800x1200 photo with a
# little Gaussian noise so that the JPEGs keep a camera-like entropy.
INPUT_SPECS = {
    "2mp.jpg": (1732, 1155, "jpeg"),
    "12mp.jpg": (4243, 2828, "jpeg"),
    "24mp.jpg": (6000, 4000, "jpeg"),
    "2mp.png": (1732, 1155, "png"),
}
# 0.4 gives ~0.3 bytes/pixel at q90 (a 12 MP file of ~3.5 MB, like a phone photo);
# full-strength noise would give ~0.49 B/px and the 1800x1200 original has 0.16.
NOISE_ATTENUATE = 0.4
SOURCE_QUALITY = 90
_GEN_VERSION = "v2"


def ensure_inputs(log=print) -> dict[str, Path]:
    """Generate the inputs once (kept in bench/.work, never committed)."""
    INPUTS.mkdir(parents=True, exist_ok=True)
    stamp = INPUTS / "stamp.json"
    spec = {"version": _GEN_VERSION, "specs": INPUT_SPECS, "noise": NOISE_ATTENUATE, "q": SOURCE_QUALITY,
            "source_size": SOURCE_PHOTO.stat().st_size}
    paths = {name: INPUTS / name for name in INPUT_SPECS}
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)) and all(
            p.exists() for p in paths.values()):
        return paths
    from wand.image import Image

    t0 = time.perf_counter()
    for name, (width, height, fmt) in INPUT_SPECS.items():
        with Image(filename=str(SOURCE_PHOTO)) as img:
            img.resize(width, height, filter="triangle")
            if fmt == "jpeg":
                # Wand's noise(attenuate=) only reaches ImageMagick 7; on IM 6 the
                # "attenuate" artifact is what AddNoiseImage reads.
                img.artifacts["attenuate"] = str(NOISE_ATTENUATE)
                img.noise("gaussian")
                img.compression_quality = SOURCE_QUALITY
            img.format = fmt
            data = img.make_blob()
        tmp = paths[name].with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(paths[name])
    stamp.write_text(json.dumps(spec))
    log(f"generated inputs in {time.perf_counter() - t0:.1f}s: " + ", ".join(
        f"{n} {p.stat().st_size / 1e6:.1f} MB" for n, p in paths.items()))
    return paths


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def fmt(value, digits=1, suffix=""):
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}{suffix}"


def table(headers, rows) -> str:
    widths = [len(h) for h in headers]
    cells = [[str(c) for c in row] for row in rows]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    def line(items):
        return "| " + " | ".join(item.ljust(widths[i]) for i, item in enumerate(items)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": _os_release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        from wand.version import MAGICK_VERSION, VERSION

        info["imagemagick"] = MAGICK_VERSION
        info["wand"] = VERSION
    except Exception as exc:  # pragma: no cover
        info["imagemagick"] = f"unavailable: {exc}"
    try:
        import PIL

        info["pillow"] = PIL.__version__
    except Exception:
        pass
    try:
        out = subprocess.run([sys.executable, "-c", "import pyvips; print(pyvips.__version__, "
                              "'libvips %d.%d.%d' % tuple(pyvips.version(i) for i in range(3)))"],
                             capture_output=True, text=True, timeout=30)
        info["pyvips"] = out.stdout.strip()
    except Exception:
        pass
    try:
        import thumbor

        info["thumbor"] = thumbor.__version__
    except Exception:
        pass
    return info


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)', text, re.M)
        return match.group(1) if match else "linux"
    except OSError:
        return platform.platform()

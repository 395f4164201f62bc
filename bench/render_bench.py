"""Render micro-benchmarks: one thread, bytes in memory -> JPEG q85 bytes out.

Run by run.py in a child process whose environment pins every library to one
thread (MAGICK_THREAD_LIMIT=1, VIPS_CONCURRENCY=1).  Sub-commands:

  micro    our engine vs naive Wand, Pillow, pyvips and the decode floor (interleaved rounds)
  ablate   what each engine optimisation buys (load hint, filter, strip, one pass)
  rss      peak RSS growth of one render, each case in a fresh process
  threads  MAGICK_THREAD_LIMIT=1 vs unset for our engine (fresh processes)
  probe    (internal) one fresh-process measurement, printed as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BOXES, JPEG_QUALITY, ensure_inputs, median  # noqa: E402

# ---------------------------------------------------------------- the contenders


def fitted(width, height, box):
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def ours_factory(**engine_kwargs):
    from resize_server import sniff
    from resize_server.imaging import geometry
    from resize_server.imaging.wand_engine import WandEngine

    engine = WandEngine(jpeg_quality=JPEG_QUALITY, **engine_kwargs)

    def ours(data, box):
        header = sniff.read_header(data)
        plan = geometry.plan(header, box, box, "fit", False)
        return engine.render(data, header, plan, "jpeg").data

    return ours


def _today_hint(header, resize):
    """geometry._load_hint as of commit 01ce0c7: the fitted size itself (which can tip the decode to 1/4)."""
    if header.format != "jpeg":
        return None
    hint_w, hint_h = resize
    if header.orientation in (5, 6, 7, 8):
        hint_w, hint_h = hint_h, hint_w
    if hint_w * 2 > header.width or hint_h * 2 > header.height:
        return None
    return hint_w, hint_h


def today(data, box):
    """The engine of commit 01ce0c7 ("today's engine" of issue 12), frozen: WandEngine._render and its hint rule.

    Kept so every run measures the current engine against it, in time and in PSNR.
    """
    from wand.image import Image

    from resize_server import sniff
    from resize_server.imaging import geometry

    header = sniff.read_header(data)
    plan = geometry.plan(header, box, box, "fit", False)
    load_hint = _today_hint(header, plan.resize)
    with Image() as img:
        if load_hint is not None:
            img.options["jpeg:size"] = "%dx%d" % load_hint
        img.read(blob=data, format=header.format + "[0]")
        img.auto_orient()
        if img.colorspace == "cmyk":
            img.transform_colorspace("srgb")
        target_w, target_h = plan.resize
        if img.width > 2 * target_w and img.height > 2 * target_h:
            img.scale(2 * target_w, 2 * target_h)
        if (img.width, img.height) != plan.resize:
            img.resize(target_w, target_h, filter="lanczos")
        img.reset_coords()
        img.strip()
        img.format = "jpeg"
        img.compression_quality = JPEG_QUALITY
        return img.make_blob()


def reference(data, box):
    """The quality reference: full decode (no shrink-on-load), one lanczos pass, q85."""
    from wand.image import Image

    with Image(blob=data) as img:
        img.auto_orient()
        size = fitted(img.width, img.height, box)
        if img.size != size:
            img.resize(*size, filter="lanczos")
        img.strip()
        img.format = "jpeg"
        img.compression_quality = JPEG_QUALITY
        return img.make_blob()


def naive(data, box):
    from wand.image import Image

    with Image(blob=data) as img:
        img.resize(*fitted(img.width, img.height, box))
        img.compression_quality = JPEG_QUALITY
        return img.make_blob("jpeg")


def pillow(data, box):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (box, box))
        im.thumbnail((box, box), Image.Resampling.LANCZOS)
        if im.mode != "RGB":
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def _vips():
    import pyvips

    pyvips.cache_set_max(0)  # no operation cache: every call really decodes
    return pyvips


def pyvips_thumb(data, box):
    pyvips = _vips()
    image = pyvips.Image.thumbnail_buffer(data, box, height=box, size="down")
    return image.jpegsave_buffer(Q=JPEG_QUALITY, keep="none")


def floor_pillow(data, box):
    """Decode only, at DCT scale 1/8 for a JPEG (full decode for a PNG)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
        im.load()
        return im.size


def floor_vips(data, box):
    pyvips = _vips()
    if data[:3] == b"\xff\xd8\xff":
        image = pyvips.Image.jpegload_buffer(data, shrink=8)
    else:
        image = pyvips.Image.new_from_buffer(data, "")
    image = image.copy_memory()
    return image.width, image.height


CONTENDERS = {
    "ours": lambda: ours_factory(),
    "today": lambda: today,
    "naive": lambda: naive,
    "pillow": lambda: pillow,
    "pyvips": lambda: pyvips_thumb,
    "floor_pil": lambda: floor_pillow,
    "floor_vips": lambda: floor_vips,
}

# ---------------------------------------------------------------- engine variants (ablation)


def variant_factory(hint="fitted", filter="lanczos", strip=True, method="resize", prescale_above=None):
    """Our engine's pipeline with one knob changed.

    hint/filter variants call the package's WandEngine itself with a changed
    Plan or filter; strip/method variants use this copy of its _render.
    """
    from wand.image import Image

    from resize_server import sniff
    from resize_server.imaging import geometry
    from resize_server.imaging.wand_engine import WandEngine

    engine = WandEngine(jpeg_quality=JPEG_QUALITY, filter=filter)
    if prescale_above is not None:
        engine = dataclasses.replace(engine, prescale_above=prescale_above)

    def make_plan(data, box):
        header = sniff.read_header(data)
        plan = geometry.plan(header, box, box, "fit", False)
        if hint == "none":
            plan = dataclasses.replace(plan, load_hint=None)
        elif hint == "box":
            plan = dataclasses.replace(plan, load_hint=(box, box) if header.format == "jpeg" else None)
        elif hint == "2fitted" and plan.load_hint is not None:
            # libvips-like: leave at least a 2x reduction for the filter after shrink-on-load
            w, h = plan.load_hint
            big = (2 * w, 2 * h)
            plan = dataclasses.replace(plan, load_hint=big if big[0] * 2 <= header.width and big[1] * 2 <= header.height else None)
        elif hint == "2box":
            plan = dataclasses.replace(plan, load_hint=(2 * box, 2 * box) if header.format == "jpeg" else None)
        return header, plan

    if strip and method == "resize":
        def render(data, box):
            header, plan = make_plan(data, box)
            return engine.render(data, header, plan, "jpeg").data
        return render

    def render_copy(data, box):
        header, plan = make_plan(data, box)
        with Image() as img:
            if plan.load_hint is not None:
                img.options["jpeg:size"] = "%dx%d" % plan.load_hint
            img.read(blob=data, format=header.format + "[0]")
            img.auto_orient()
            if method == "thumbnail":
                img.thumbnail(*plan.resize)
            elif method == "prescale":
                # libvips-style: box-average (ScaleImage) down to 2x the target, then one lanczos pass
                w, h = plan.resize
                if img.width > 2 * w and img.height > 2 * h:
                    img.scale(2 * w, 2 * h)
                img.resize(w, h, filter=filter)
            else:
                img.resize(*plan.resize, filter=filter)
            if strip:
                img.strip()
            img.format = "jpeg"
            img.compression_quality = JPEG_QUALITY
            return img.make_blob()

    return render_copy


VARIANTS = {
    # label -> kwargs for variant_factory
    "package engine (fitted hint, lanczos, strip)": {},
    "no load hint": {"hint": "none"},
    "hint = 2x fitted size (leave 2x for the filter)": {"hint": "2fitted"},
    "hint = box (WxW)": {"hint": "box"},
    "hint = 2x box": {"hint": "2box"},
    "filter triangle": {"filter": "triangle"},
    "filter catrom": {"filter": "catrom"},
    "filter mitchell": {"filter": "mitchell"},
    "filter lanczos2": {"filter": "lanczos2"},
    "filter box": {"filter": "box"},
    "Wand thumbnail() instead of resize": {"method": "thumbnail"},
    "scale() to 2x, then lanczos": {"method": "prescale"},
    "no strip": {"strip": False},
    "pre-scale above 2x (the 01ce0c7 rule)": {"prescale_above": 2.0},
    "never pre-scale (one lanczos pass)": {"prescale_above": 1e9},
}
ABLATION_CASES = [("24mp.jpg", 200), ("12mp.jpg", 200), ("24mp.jpg", 1024), ("12mp.jpg", 1024),
                  ("2mp.jpg", 1024), ("2mp.jpg", 200), ("2mp.png", 200)]

# ---------------------------------------------------------------- timing


def timed(fn, data, box):
    t0 = time.perf_counter()
    out = fn(data, box)
    return (time.perf_counter() - t0) * 1000.0, out


def interleaved(fns: dict, data, box, budget_ms=1800.0, min_runs=3, max_runs=15):
    """Median ms per function; rounds interleave the functions so drift hits all alike."""
    est = {}
    outputs = {}
    for name, fn in fns.items():  # warm-up (also the estimate)
        est[name], outputs[name] = timed(fn, data, box)
    runs = {name: max(min_runs, min(max_runs, int(budget_ms / max(est[name], 0.1)))) for name in fns}
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(max(runs.values())):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if len(samples[name]) < runs[name]:
                samples[name].append(timed(fns[name], data, box)[0])
    return {name: median(v) for name, v in samples.items()}, {n: len(v) for n, v in samples.items()}, outputs


def out_size(out):
    return len(out) if isinstance(out, (bytes, bytearray)) else None


def cmd_micro(args):
    inputs = ensure_inputs(log=lambda m: print(m, file=sys.stderr))
    fns = {name: make() for name, make in CONTENDERS.items()}
    results = []
    for name in args.inputs:
        data = inputs[name].read_bytes()
        for box in BOXES:
            t0 = time.perf_counter()
            med, runs, outputs = interleaved(fns, data, box, budget_ms=args.budget_ms)
            ref = reference(data, box)
            quality = {k: psnr_db(outputs[k], ref) for k in ("ours", "today", "pillow", "pyvips")}
            results.append({"input": name, "box": box, "ms": med, "runs": runs,
                            "bytes": {k: out_size(v) for k, v in outputs.items()},
                            "psnr_vs_reference": quality,
                            "wall_s": round(time.perf_counter() - t0, 2)})
            print(f"  micro {name} -> {box}: ours {med['ours']:.1f} ms, pyvips {med['pyvips']:.1f} ms "
                  f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    return results


def psnr(a: bytes, b: bytes) -> float | None:
    from wand.image import Image

    with Image(blob=a) as x, Image(blob=b) as y:
        if x.size != y.size:
            return None
        _, distortion = x.compare(y, metric="peak_signal_to_noise_ratio")
        return distortion


IDENTICAL_DB = 99.0  # what psnr_db reports for pixel-identical outputs


def psnr_db(a: bytes, b: bytes) -> float | None:
    """PSNR in dB of ``a`` against ``b`` (None if the sizes differ; IDENTICAL_DB if no pixel differs)."""
    try:
        q = psnr(a, b)
    except Exception:
        return None
    if q is None:
        return None
    return IDENTICAL_DB if q == 0 or q > 1e6 or q != q else min(float(q), IDENTICAL_DB)


def cmd_ablate(args):
    inputs = ensure_inputs(log=lambda m: print(m, file=sys.stderr))
    fns = {label: variant_factory(**kw) for label, kw in VARIANTS.items()}
    results = []
    for name, box in ABLATION_CASES:
        data = inputs[name].read_bytes()
        t0 = time.perf_counter()
        med, runs, outputs = interleaved(fns, data, box, budget_ms=args.budget_ms, min_runs=3, max_runs=11)
        # Quality reference: full decode (no hint) + lanczos, i.e. the "no load hint" variant.
        ref = outputs["no load hint"]
        quality = {}
        for label, out in outputs.items():
            try:
                quality[label] = psnr(out, ref) if label != "no load hint" else None
            except Exception:
                quality[label] = None
        results.append({"input": name, "box": box, "ms": med, "runs": runs,
                        "bytes": {k: out_size(v) for k, v in outputs.items()}, "psnr_vs_no_hint": quality})
        print(f"  ablate {name} -> {box} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    return results


STAGE_CASES = [("24mp.jpg", 200), ("12mp.jpg", 200), ("12mp.jpg", 1024), ("2mp.jpg", 1024), ("2mp.png", 200), ("2mp.png", 1024)]


def cmd_stages(args):
    """Where the engine's time goes: decode (with the plan's hint) + auto_orient, resize, strip + encode."""
    from wand.image import Image

    from resize_server import sniff
    from resize_server.imaging import geometry

    inputs = ensure_inputs(log=lambda m: print(m, file=sys.stderr))
    results = []
    for name, box in STAGE_CASES:
        data = inputs[name].read_bytes()
        header = sniff.read_header(data)
        plan = geometry.plan(header, box, box, "fit", False)
        samples = {"decode": [], "resize lanczos": [], "resize triangle": [], "resize box": [], "encode": []}
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            img = Image()
            if plan.load_hint is not None:
                img.options["jpeg:size"] = "%dx%d" % plan.load_hint
            img.read(blob=data, format=header.format + "[0]")
            img.auto_orient()
            t_decode = time.perf_counter() - t0
            decoded = img.size
            times = {"decode": t_decode}
            for flt in ("lanczos", "triangle", "box"):
                with img.clone() as work:
                    t0 = time.perf_counter()
                    work.resize(*plan.resize, filter=flt)
                    times[f"resize {flt}"] = time.perf_counter() - t0
                    if flt == "lanczos":
                        t0 = time.perf_counter()
                        work.strip()
                        work.format = "jpeg"
                        work.compression_quality = JPEG_QUALITY
                        work.make_blob()
                        times["encode"] = time.perf_counter() - t0
            img.close()
            if i:  # the first round is a warm-up
                for k, v in times.items():
                    samples[k].append(v * 1000)
        results.append({"input": name, "box": box, "decoded": decoded, "resize": plan.resize,
                        "ms": {k: median(v) for k, v in samples.items()}})
    return results


# ---------------------------------------------------------------- fresh-process probes


def cmd_probe(args):
    """One fresh process: import, read, then measure ru_maxrss around one render (and time a few)."""
    data = Path(args.path).read_bytes()
    if args.method.startswith("variant:"):
        fn = variant_factory(**json.loads(args.method.split(":", 1)[1]))
    else:
        fn = CONTENDERS[args.method]()
    if args.method in ("pyvips", "floor_vips"):
        _vips()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    fn(data, args.box)
    first_ms = (time.perf_counter() - t0) * 1000
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [timed(fn, data, args.box)[0] for _ in range(args.repeat)]
    print(json.dumps({"before_kb": before, "after_kb": after, "first_ms": first_ms,
                      "median_ms": median(times) if times else None}))


def run_probe(method, path, box, repeat=0, env=None):
    out = subprocess.run([sys.executable, __file__, "probe", method, str(path), str(box), "--repeat", str(repeat)],
                         capture_output=True, text=True, timeout=300, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"probe {method} {path} {box} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cmd_rss(args):
    inputs = ensure_inputs(log=lambda m: print(m, file=sys.stderr))
    methods = ["ours", "naive", "pillow", "pyvips"]
    jobs = [(name, box, method) for name in args.inputs for box in BOXES for method in methods]
    results = []

    def one(job):
        name, box, method = job
        r = run_probe(method, inputs[name], box)
        return {"input": name, "box": box, "method": method,
                "growth_mb": (r["after_kb"] - r["before_kb"]) / 1024.0, "baseline_mb": r["before_kb"] / 1024.0}

    # Peak RSS is per process, so two probes at a time do not disturb each other.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    return results


def cmd_threads(args):
    inputs = ensure_inputs(log=lambda m: print(m, file=sys.stderr))
    results = []
    for name, box in [("24mp.jpg", 200), ("24mp.jpg", 1024), ("12mp.jpg", 1024), ("2mp.jpg", 1024)]:
        row = {"input": name, "box": box}
        for label in ("unset", "1"):
            env = dict(os.environ)
            if label == "unset":
                env.pop("MAGICK_THREAD_LIMIT", None)
            else:
                env["MAGICK_THREAD_LIMIT"] = "1"
            r = run_probe("ours", inputs[name], box, repeat=args.repeat, env=env)
            row[label] = r["median_ms"]
        results.append(row)
        print(f"  threads {name} -> {box}: unset {row['unset']:.1f} ms, 1 {row['1']:.1f} ms", file=sys.stderr)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("micro", "ablate", "rss", "threads", "stages"):
        p = sub.add_parser(name)
        p.add_argument("--inputs", nargs="+", default=["2mp.jpg", "12mp.jpg", "24mp.jpg", "2mp.png"])
        p.add_argument("--budget-ms", type=float, default=1800.0)
        p.add_argument("--repeat", type=int, default=7)
        p.add_argument("--json", required=True)
    p = sub.add_parser("probe")
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("box", type=int)
    p.add_argument("--repeat", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        return cmd_probe(args)
    result = {"micro": cmd_micro, "ablate": cmd_ablate, "rss": cmd_rss, "threads": cmd_threads,
              "stages": cmd_stages}[args.cmd](args)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""`make bench`: build the inputs, run every benchmark, print the tables, write results/latest.md.

    python run.py [--quick] [--skip-http] [--skip-render]

--quick uses far fewer runs and requests (a smoke test of the harness; its
numbers are not the ones to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, BOXES, RESULTS, WORK, ensure_inputs, fmt, machine_info, median,  # noqa: E402
                    table)

RENDER_INPUTS = ["2mp.jpg", "12mp.jpg", "24mp.jpg", "2mp.png"]
# (concurrency, requests) of the py-spy profile, for --quick and for the real run.
PROFILE_LEVELS = {True: [(1, 12), (8, 24)], False: [(1, 48), (8, 96)]}
# The other benchmarks `make bench` runs when they are in bench/ (their own scripts, their output kept verbatim).
EXTRAS = {
    "miss_latency": (["miss_latency.py"], ["miss_latency.py", "--rounds", "8"]),
    "pregen": (["pregen_bench.py"], ["pregen_bench.py", "--rounds", "1", "--uploads", "2"]),
}


def single_thread_env() -> dict:
    env = dict(os.environ)
    env.update(MAGICK_THREAD_LIMIT="1", VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    return env


def render_step(cmd: str, out: Path, extra=(), timeout=600) -> list:
    args = [sys.executable, str(BENCH / "render_bench.py"), cmd, "--json", str(out), *extra]
    subprocess.run(args, check=True, env=single_thread_env(), timeout=timeout)
    return json.loads(out.read_text())


class Report:
    def __init__(self):
        self.parts: list[str] = []

    def add(self, text: str = ""):
        print(text, flush=True)
        self.parts.append(text)

    def section(self, title: str):
        self.add("")
        self.add(f"## {title}")
        self.add("")

    def markdown(self) -> str:
        return "\n".join(self.parts) + "\n"


def ratio(a, b):
    try:
        return a / b if a and b else None
    except TypeError:
        return None


def x(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}x"


def mark(ok):
    return "met" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--skip-extras", action="store_true", help="skip miss_latency.py and pregen_bench.py")
    args = parser.parse_args()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    t_start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw: dict = {"args": vars(args)}
    report = Report()
    info = machine_info()
    raw["machine"] = info

    report.add("# resize-server benchmark results")
    report.add("")
    raw["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    report.add(f"Command: `make bench`{' (BENCH_ARGS=--quick: smoke-test numbers)' if args.quick else ''}; "
               f"started {raw['started']}.")
    report.add("")
    report.add(table(["machine", "value"], [
        ["nproc / affinity", f"{info['nproc']} / {info['affinity']}"],
        ["CPU", info["cpu"]],
        ["memory", f"{info['mem_gib']} GiB"],
        ["OS / Python", f"{info['os']} / {info['python']}"],
        ["ImageMagick (Wand)", f"{info.get('imagemagick')} (Wand {info.get('wand')})"],
        ["Pillow / pyvips / thumbor", f"{info.get('pillow')} / {info.get('pyvips')} / {info.get('thumbor')}"],
        ["load average at start", " ".join(f"{v:.2f}" for v in info["loadavg_start"])],
    ]))

    inputs = ensure_inputs()
    report.add("")
    from common import INPUT_SPECS, NOISE_ATTENUATE, SOURCE_QUALITY

    report.add("Inputs, generated at bench time from `tests/fixtures/exif-orientation/Landscape_1.jpg` "
               f"(resize, Gaussian noise with attenuate {NOISE_ATTENUATE}, JPEG q{SOURCE_QUALITY}): " + ", ".join(
                   f"{n} {INPUT_SPECS[n][0]}x{INPUT_SPECS[n][1]} {p.stat().st_size / 1e6:.1f} MB "
                   f"({p.stat().st_size / (INPUT_SPECS[n][0] * INPUT_SPECS[n][1]):.2f} B/px)"
                   for n, p in inputs.items()))

    if not args.skip_render:
        budget = ["--budget-ms", "300"] if args.quick else ["--budget-ms", "900"]
        print("\nrender micro-benchmarks (one thread each) ...", flush=True)
        micro = render_step("micro", WORK / "micro.json", ["--inputs", *RENDER_INPUTS, *budget])
        print("peak RSS growth, one fresh process per case ...", flush=True)
        rss = render_step("rss", WORK / "rss.json", ["--inputs", *RENDER_INPUTS])
        print("engine ablations ...", flush=True)
        ablate = render_step("ablate", WORK / "ablate.json", ["--budget-ms", "300" if args.quick else "700"])
        print("MAGICK_THREAD_LIMIT ...", flush=True)
        threads = render_step("threads", WORK / "threads.json", ["--repeat", "3" if args.quick else "7"])
        print("engine stage costs ...", flush=True)
        stages = render_step("stages", WORK / "stages.json", ["--repeat", "3" if args.quick else "7"])
        raw.update(micro=micro, rss=rss, ablate=ablate, threads=threads, stages=stages)
        render_tables(report, micro, rss, ablate, threads, stages)

    if not args.skip_http:
        import http_bench

        print("\nHTTP cold-miss benchmark ...", flush=True)
        http = http_bench.main(inputs["12mp.jpg"], WORK / "http.json", quick=args.quick)
        raw["http"] = http
        http_tables(report, http)

    if not args.skip_http:
        import hotpath_bench

        print("\nhot-path steps before/after (CPU, interleaved) ...", flush=True)
        subprocess.run([sys.executable, str(BENCH / "hotpath_bench.py"), "--rounds", "8" if args.quick else "25",
                        "--json", str(WORK / "hotpath.json")], check=True, env=single_thread_env(), timeout=600,
                       stdout=subprocess.DEVNULL)
        raw["hotpath"] = json.loads((WORK / "hotpath.json").read_text())
        report.section("A miss's other steps, before and after issue 12 (CPU ms of the calling thread, same rounds)")
        report.add("`bench/hotpath_bench.py`: each step as of commit 01ce0c7 (copied in the script) and as the package "
                   "does it now, interleaved; S3 is s3rver on loopback.")
        report.add("")
        report.add(hotpath_bench.hotpath_table(raw["hotpath"]))

    if not args.skip_profile:
        import profile_server

        print("\nprofile of the server's workers under load (py-spy) ...", flush=True)
        raw["profile"] = {}
        for conc, n in PROFILE_LEVELS[args.quick]:
            raw["profile"][conc] = profile_server.main(inputs["12mp.jpg"], WORK / f"profile-c{conc}.json",
                                                       quick=args.quick, requests=n, concurrency=conc)
        profile_tables(report, raw["profile"])

    if not args.skip_extras:
        raw["extras"] = extras(report, args.quick)

    issue12_targets(report, raw)
    targets(report, raw)
    total = time.perf_counter() - t_start
    raw["total_s"] = total
    summary = summary_md(raw, info, total, args.quick)
    (RESULTS / ("summary-quick.md" if args.quick else "summary.md")).write_text(summary)
    print("\n" + summary)
    report.add("")
    report.add(f"Total benchmark time: {total:.0f} s (excluding venv setup); load average at end: "
               + " ".join(f"{v:.2f}" for v in os.getloadavg()) + ".")
    raw_path = WORK / ("latest-quick.json" if args.quick else "latest.json")
    raw_path.write_text(json.dumps(raw, indent=1, default=str))
    out = RESULTS / ("latest-quick.md" if args.quick else "latest.md")
    out.write_text(report.markdown())
    print(f"\nwrote {out.relative_to(BENCH.parent)} (raw numbers: {raw_path.relative_to(BENCH.parent)})")
    return 0


# ---------------------------------------------------------------- render tables


def _floor(ms):
    return min(ms["floor_pil"], ms["floor_vips"])


def render_tables(report, micro, rss, ablate, threads, stages):
    report.section("Render micro-benchmark (one thread, median ms; ratio = ours / other)")
    report.add("ours = `sniff.read_header` -> `geometry.plan(h, box, box, 'fit', False)` -> "
               "`WandEngine(jpeg_quality=85).render(..., 'jpeg')`. naive = `Image(blob)` + `resize` + q85. "
               "Pillow = `draft('RGB', (box, box))` + `thumbnail(LANCZOS)` + q85. "
               "pyvips = `thumbnail_buffer(size='down')` + `jpegsave_buffer(Q=85, keep='none')`. "
               "floor = decode only at DCT scale 1/8 (the faster of Pillow draft+load and pyvips "
               "`jpegload_buffer(shrink=8)`; a full decode for the PNG). Rounds interleave the contenders.")
    report.add("")
    rows = []
    for r in micro:
        ms = r["ms"]
        fl = _floor(ms)
        rows.append([r["input"], r["box"], fmt(ms["ours"]), fmt(ms["naive"]), fmt(ms["pillow"]), fmt(ms["pyvips"]),
                     f"{fmt(fl)} ({'Pillow' if ms['floor_pil'] <= ms['floor_vips'] else 'vips'})",
                     x(ratio(ms["ours"], ms["naive"])), x(ratio(ms["ours"], ms["pillow"])),
                     x(ratio(ms["ours"], ms["pyvips"])), x(ratio(ms["ours"], fl)),
                     f"{r['runs']['ours']}/{r['runs']['naive']}/{r['runs']['pyvips']}"])
    report.add(table(["input", "box", "ours ms", "naive ms", "Pillow ms", "pyvips ms", "floor ms",
                      "÷naive", "÷Pillow", "÷pyvips", "÷floor", "runs (ours/naive/vips)"], rows))

    report.section("Output quality and today's engine (PSNR dB vs a full-decode lanczos reference; same rounds)")
    report.add("today = the engine of commit 01ce0c7 (its `_render` and its `jpeg:size` rule, frozen in "
               "bench/render_bench.py `today`), timed in the same interleaved rounds as ours. reference = full decode "
               "(no shrink-on-load) + one lanczos pass + q85. 99 dB = pixel-identical to the reference. "
               "Target (issue 12): ours no more than 0.5 dB below today at every input and box.")
    report.add("")
    rows = []
    for r in micro:
        ms, q = r["ms"], r.get("psnr_vs_reference", {})
        d = _db_delta(q)
        rows.append([r["input"], r["box"], fmt(ms["ours"]), fmt(ms["today"]), x(ratio(ms["ours"], ms["today"])),
                     fmt(q.get("ours"), 2), fmt(q.get("today"), 2), fmt(d, 2, " dB") if d is not None else "-",
                     fmt(q.get("pillow"), 2), fmt(q.get("pyvips"), 2), mark(d is not None and d >= -0.5)])
    report.add(table(["input", "box", "ours ms", "today ms", "ours ÷ today", "ours dB", "today dB", "ours - today",
                      "Pillow dB", "pyvips dB", "≥ today - 0.5 dB"], rows))

    report.section("Peak RSS growth of one render in a fresh process (MB, ru_maxrss after - before)")
    by = {(r["input"], r["box"], r["method"]): r["growth_mb"] for r in rss}
    rows = []
    for name in RENDER_INPUTS:
        for box in BOXES:
            if (name, box, "ours") in by:
                rows.append([name, box] + [fmt(by.get((name, box, m))) for m in ("ours", "naive", "pillow", "pyvips")])
    report.add(table(["input", "box", "ours", "naive Wand", "Pillow", "pyvips"], rows))

    report.section("What each engine choice buys (median ms; ×package engine; PSNR dB vs full-decode lanczos)")
    report.add("Each row changes one knob of the package engine (hint and filter rows call `WandEngine` with a "
               "changed `Plan`/`filter`; the others use a copy of its `_render` in bench/render_bench.py). "
               "PSNR compares the output with the no-hint (full decode + lanczos) output; no dB = identical to it. "
               "PSNR measures closeness to full Lanczos, not beauty: a softer filter scores lower.")
    report.add("")
    labels = list(ablate[0]["ms"])
    base_label = labels[0]
    headers = ["variant"] + [f"{r['input']}→{r['box']}" for r in ablate]
    rows = []
    for label in labels:
        row = [label]
        for r in ablate:
            ms, base = r["ms"][label], r["ms"][base_label]
            q = r["psnr_vs_no_hint"].get(label)
            cell = f"{ms:.1f} ({ms / base:.2f}x"
            cell += f", {q:.1f} dB)" if isinstance(q, (int, float)) and q < 1e6 else ")"
            row.append(cell)
        rows.append(row)
    report.add(table(headers, rows))
    report.add("")
    rows = []
    for r in ablate:
        rows.append([f"{r['input']}→{r['box']}", r["bytes"][base_label], r["bytes"]["no strip"],
                     r["bytes"]["no strip"] - r["bytes"][base_label]])
    report.add("Output bytes with and without `strip()` (the input carries the photo's EXIF):")
    report.add("")
    report.add(table(["case", "strip (package)", "no strip", "saved bytes"], rows))

    report.section("Where the engine's time goes (ImageMagick stages, median ms) vs pyvips' whole thumbnail")
    vips = {(r["input"], r["box"]): r["ms"]["pyvips"] for r in micro}
    rows = []
    for r in stages:
        ms = r["ms"]
        pv = vips.get((r["input"], r["box"]))
        rows.append([f"{r['input']}→{r['box']}", "x".join(map(str, r["decoded"])), "x".join(map(str, r["resize"])),
                     fmt(ms["decode"]), fmt(ms["resize lanczos"]), fmt(ms["resize triangle"]), fmt(ms["resize box"]),
                     fmt(ms["encode"]), fmt(pv), x(ratio(ms["decode"], pv))])
    report.add(table(["case", "decoded at", "resized to", "decode+orient", "resize lanczos", "resize triangle",
                      "resize box", "strip+encode", "pyvips total", "decode alone ÷ pyvips"], rows))

    report.section("MAGICK_THREAD_LIMIT for one render (fresh process per setting, median ms)")
    rows = [[f"{r['input']}→{r['box']}", fmt(r["unset"]), fmt(r["1"]), x(ratio(r["1"], r["unset"]))] for r in threads]
    report.add(table(["case", "unset (OpenMP default)", "MAGICK_THREAD_LIMIT=1", "1 ÷ unset"], rows))


# ---------------------------------------------------------------- HTTP tables


def _http_row(label, s):
    cpu = s.get("cpu_ms_per_req", {})
    return [label, s["concurrency"], f"{s['ok']}/{s['sent']}", s["errors"], fmt(s["throughput"], 2),
            fmt(s["p50_ms"], 0), fmt(s["p99_ms"], 0), fmt(s.get("rss_total_mb"), 0),
            fmt(s.get("worker_hwm_max_mb"), 0),
            f"{fmt(cpu.get('server'), 0)} / {fmt(cpu.get('s3rver'), 0)} / {fmt(cpu.get('client'), 0)}",
            f"{fmt(s.get('cpu_busy'), 2)} / {fmt(s.get('machine_busy'), 2)}"]


HTTP_HEADERS = ["server", "conc.", "ok/sent", "errors", "req/s", "p50 ms", "p99 ms", "RSS MB (all procs)",
                "peak worker MB", "CPU ms/req server / s3rver / client", "cores busy: bench / whole machine"]


def http_tables(report, h):
    report.section(f"HTTP cold miss: 12 MP JPEG ({h['source_bytes'] / 1e6:.1f} MB) -> {h['box']}x{h['box']} fit, "
                   "every request a distinct key")
    import http_bench

    report.add("resize-server: stock `gunicorn -c python:resize_server.gunicorn_conf wsgi:app` ("
               + http_bench._stock_label() + "; MAGICK_THREAD_LIMIT=1), S3 = s3rver on loopback (data on tmpfs), "
               "`GET /bench/imgNNNNN_200x200.jpg`. thumbor 7.8.0: PIL engine, `/unsafe/fit-in/200x200/...`, "
               "QUALITY=85, PROGRESSIVE_JPEG=False, RESPECT_ORIENTATION=True, no storage/result storage, "
               "HTTP loader (pycurl) from the same s3rver, one process per core; also with ENGINE_THREADPOOL_SIZE=4. "
               "Client: one http.client keep-alive connection per thread, in the bench process. p99 is nearest-rank "
               f"({h['ours'][-1]['ok']} requests at c=8). CPU ms/req: user+system CPU of the server's processes, "
               "of s3rver and of the client, per request; 'whole machine' counts every process on the box, "
               "including anything else running there.")
    report.add("")
    rows = [_http_row("resize-server", s) for s in h["ours"]]
    rows += [_http_row("thumbor", s) for s in h["thumbor"]]
    rows += [_http_row("thumbor, ENGINE_THREADPOOL_SIZE=4", s) for s in h["thumbor_tuned"]]
    report.add(table(HTTP_HEADERS, rows))
    report.add("")
    rows = []
    for label, key in (("thumbor", "thumbor"), ("thumbor, ENGINE_THREADPOOL_SIZE=4", "thumbor_tuned")):
        for o, t in zip(h["ours"], h[key]):
            rows.append([label, o["concurrency"], x(ratio(o["throughput"], t["throughput"])),
                         x(ratio(o["p50_ms"], t["p50_ms"])), x(ratio(o["p99_ms"], t["p99_ms"]))])
    report.add("Servers were up side by side and measured in alternating segments of fresh keys "
               f"(segments per level: {', '.join(str(s['segments']) for s in h['ours'])}), so background load on "
               "the machine falls on each alike.")
    report.add("")
    report.add(table(["vs", "concurrency", "throughput ours ÷ thumbor", "p50 ours ÷ thumbor", "p99 ours ÷ thumbor"],
                     rows))

    report.section("Where a miss's time goes (concurrency 1, medians)")
    t1 = h["ours"][0]["timing"]
    put = h["put"]
    rows = [["client latency", fmt(t1["latency_ms"])],
            ["Server-Timing fetch", fmt(t1["fetch_ms"])],
            ["Server-Timing render", fmt(t1["render_ms"])],
            ["latency - fetch - render (HTTP, Flask, key parsing, client)", fmt(t1["rest_ms"])],
            [f"separate PUT of the same size ({put['size']} B) to s3rver", fmt(put["median_ms"])],
            ["fetch + render + PUT (what an inline store would cost)",
             fmt(t1["fetch_ms"] + t1["render_ms"] + put["median_ms"])]]
    slow = h.get("slow_put")
    if slow and slow.get("timing"):
        ts = slow["timing"]
        rows += [[f"with every PUT held 250 ms by a proxy ({slow['proxy_puts']} PUTs delayed; a PUT through it: "
                  f"{fmt(h['put_delayed']['median_ms'], 0)} ms): client latency", fmt(ts["latency_ms"])],
                 ["  ... its fetch + render", fmt(ts["fetch_ms"] + ts["render_ms"])],
                 ["  ... latency - fetch - render", fmt(ts["rest_ms"])]]
    report.add(table(["quantity", "ms"], rows))
    report.add("")
    report.add("The fetch leg alone (12 MP source from s3rver, median of 15, client in the bench process):")
    report.add("")
    report.add(table(["how", "ms"], [[k.removesuffix("_ms"), fmt(v)] for k, v in h["fetch"].items()]))

    report.section("Worker models and render slots (concurrency 8)")
    report.add("All ten servers up at once, measured in alternating segments of fresh keys.")
    report.add("")
    rows = [_http_row(m["label"], m) for m in h["matrix"]]
    report.add(table(HTTP_HEADERS, rows))
    seen = h.get("worker_class_seen", {})
    if seen:
        report.add("")
        report.add("gunicorn's own log, 'Using worker:': " + ", ".join(f"{k} {v}" for k, v in seen.items()))


# ---------------------------------------------------------------- profile


def profile_tables(report, prof):
    import profile_server

    report.section("Where a miss's CPU goes: py-spy on the gunicorn workers (12 MP -> 200, stock server)")
    report.add("`bench/profile_server.py` (rerun alone: see its docstring): the stock server under the benchmark's "
               "load, every request a fresh key; `py-spy record --native -r 200 --format raw` on every worker; each "
               "sample of a running thread goes to the first matching category (waiting threads are left out); the "
               "shares are scaled to the workers' CPU measured from /proc over the same window.")
    levels = sorted(prof, key=int)
    cats = [c for c in profile_server.ORDER if any(c in prof[k]["categories"] for k in levels)]
    rows = []
    for cat in cats:
        row = [cat]
        for k in levels:
            c = prof[k]["categories"].get(cat)
            row.append(f"{c['ms_per_miss']:.2f} ({100 * c['share']:.1f}%)" if c else "-")
        rows.append(row)
    rows.append(["total: workers' CPU per miss (/proc)"] + [f"{prof[k]['cpu_ms_per_miss']:.2f} (100%)" for k in levels])
    report.add("")
    report.add(table(["where (CPU ms per miss, share)"] + [f"c={k}" for k in levels], rows))
    report.add("")
    for k in levels:
        report.add(f"* c={k}: " + profile_server.profile_notes(prof[k]))
    report.add("")
    report.add("Top leaf frames per category (c=" + str(levels[-1]) + "):")
    report.add("")
    report.add(profile_server.profile_table(prof[levels[-1]]))


def extras(report, quick):
    """Run the other benchmark scripts found in bench/ and keep their output (and a few parsed figures)."""
    out = {}
    for name, (full, smoke) in EXTRAS.items():
        script = BENCH / full[0]
        if not script.exists():
            continue
        argv = smoke if quick else full
        print(f"\n{' '.join(argv)} ...", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-u", *[str(BENCH / argv[0]), *argv[1:]]], capture_output=True,
                                  text=True, timeout=900, env=single_thread_env() if name == "pregen" else None,
                                  cwd=BENCH)
        except subprocess.TimeoutExpired:
            out[name] = {"error": "timed out after 900 s"}
            continue
        text = proc.stdout.strip()
        print(text, flush=True)
        out[name] = {"rc": proc.returncode, "stdout": text, "stderr": proc.stderr[-2000:], "argv": argv,
                     "wall_s": time.perf_counter() - t0}
        report.section(f"{' '.join(argv)} (run by `make bench`, output as printed)")
        report.add(text if proc.returncode == 0 else f"FAILED (rc {proc.returncode}):\n{proc.stderr[-1500:]}")
    return out


def _db_delta(q):
    if not q or q.get("ours") is None or q.get("today") is None:
        return None
    return q["ours"] - q["today"]


def _level(levels, conc):
    return next((lv for lv in levels if lv["concurrency"] == conc), None)


def issue12_targets(report, raw):
    """Issue 12's targets, side by side: ours, the comparator, the ratio, met or not."""
    rows = []
    h = raw.get("http")
    if h:
        def cpu_all(levels):
            n = sum(lv["ok"] + lv["errors"] for lv in levels)
            return sum(lv["cpu_ms_per_req"]["server"] * (lv["ok"] + lv["errors"]) for lv in levels) / max(1, n)

        for label, key in (("thumbor", "thumbor"), ("thumbor, ENGINE_THREADPOOL_SIZE=4", "thumbor_tuned")):
            if not h.get(key):
                continue
            o, t = cpu_all(h["ours"]), cpu_all(h[key])
            levels = ", ".join(f"c={a['concurrency']} {a['cpu_ms_per_req']['server']:.1f}/"
                               f"{b['cpu_ms_per_req']['server']:.1f}" for a, b in zip(h["ours"], h[key]))
            rows.append([f"server CPU per miss ≤ 1.0x {label}", f"{o:.1f} ms", f"{t:.1f} ms", x(o / t),
                         mark(o <= t), f"all levels; per level ours/thumbor: {levels}"])
        for label, key in (("thumbor", "thumbor"), ("thumbor, ENGINE_THREADPOOL_SIZE=4", "thumbor_tuned")):
            if not h.get(key):
                continue
            o, t = _level(h["ours"], 1), _level(h[key], 1)
            rows.append([f"p50 at c=1 ≤ 1.0x {label}", f"{o['p50_ms']:.1f} ms", f"{t['p50_ms']:.1f} ms",
                         x(o["p50_ms"] / t["p50_ms"]), mark(o["p50_ms"] <= t["p50_ms"]),
                         f"{o['ok']} / {t['ok']} requests"])
        for label, key in (("thumbor", "thumbor"), ("thumbor, ENGINE_THREADPOOL_SIZE=4", "thumbor_tuned")):
            if not h.get(key):
                continue
            o, t = _level(h["ours"], 8), _level(h[key], 8)
            v = o["throughput"] / t["throughput"]
            rows.append([f"throughput at c=8 ≥ 1.0x {label}", f"{o['throughput']:.2f} req/s",
                         f"{t['throughput']:.2f} req/s", x(v), mark(v >= 1.0),
                         f"{100 * (v - 1):+.0f}% ({o['ok']} / {t['ok']} requests)"])
    micro = raw.get("micro")
    if micro:
        for name in ("12mp.jpg", "24mp.jpg"):
            case = next((r for r in micro if r["input"] == name and r["box"] == 200), None)
            if case:
                ms = case["ms"]
                fl = _floor(ms)
                v = ms["ours"] / fl
                rows.append([f"WandEngine.render {name.split('.')[0].upper()} JPEG -> 200 ≤ 1.1x DCT-1/8 decode floor",
                             f"{ms['ours']:.1f} ms", f"{fl:.1f} ms", x(v), mark(v <= 1.1),
                             f"today's engine {ms['today']:.1f} ms = {ms['today'] / fl:.2f}x; "
                             f"Pillow draft+LANCZOS+q85 {ms['pillow']:.1f} ms = {ms['pillow'] / fl:.2f}x"])
        deltas = [(r["input"], r["box"], _db_delta(r.get("psnr_vs_reference"))) for r in micro]
        known = [d for d in deltas if d[2] is not None]
        worst = min(known, key=lambda d: d[2]) if known else None
        bad = [f"{i}→{b} {d:+.2f} dB" for i, b, d in known if d < -0.5]
        rows.append(["PSNR vs full-decode lanczos ≥ today's engine - 0.5 dB, every input and box",
                     f"worst {worst[0]}→{worst[1]} {worst[2]:+.2f} dB" if worst else "-",
                     "today (01ce0c7)", f"{len(known) - len(bad)}/{len(deltas)} cases",
                     mark(worst is not None and not bad and len(known) == len(deltas)),
                     ", ".join(bad) or "best " + (f"{max(known, key=lambda d: d[2])[0]}→"
                                                  f"{max(known, key=lambda d: d[2])[1]} "
                                                  f"{max(d[2] for d in known):+.2f} dB" if known else "-")])
    if rows:
        report.section("Targets (issue 12), from this run: resize-server vs thumbor / the decode floor / today")
        report.add(table(["target", "resize-server", "comparator", "ratio", "", "detail"], rows))
        raw["issue12_targets"] = rows


# ---------------------------------------------------------------- the one-screen summary


def _extra_rows(raw):
    import re

    rows = []
    ml = (raw.get("extras") or {}).get("miss_latency")
    if ml and ml.get("rc") == 0:
        text = ml["stdout"]
        p50 = {}
        for label in ("before", "after", "answered from the store"):
            m = re.search(r"\|[^|\n]*" + re.escape(label) + r"[^|\n]*\|\s*\d+\s*\|\s*([0-9.]+)", text)
            if m:
                p50[label] = float(m.group(1))
        m = re.search(r"ratio after/before \(p50\): ([0-9.]+)", text)
        if m and "before" in p50 and "after" in p50:
            v = float(m.group(1))
            rows.append(["issue 8", "miss latency with the concurrent derived-key read vs without, p50 (no bound; "
                         "the lead's loaded run: 131.9 vs 126.5 ms, 1.04x)",
                         f"{p50['after']:.1f} vs {p50['before']:.1f} ms = {v:.3f}x"
                         + (f"; already stored: {p50['answered from the store']:.1f} ms" if "answered from the store" in p50 else ""),
                         "measured"])
    pg = (raw.get("extras") or {}).get("pregen")
    if pg and pg.get("rc") == 0:
        m = re.search(r"worker >= 3x naive: (met|NOT met) \(([0-9.]+)x\); worker >= 2x on-demand per preset: "
                      r"(met|NOT met)\s*\(([0-9.]+)x\)", pg["stdout"])
        if m:
            rows.append(["issue 9", "pre-generation (3 presets per 12 MP upload) ≥ 3x the classic Lambda",
                         f"{m.group(2)}x", "met" if m.group(1) == "met" else "MISSED"])
            rows.append(["issue 9", "pre-generation ≥ 2x on-demand once per preset",
                         f"{m.group(4)}x", "met" if m.group(3) == "met" else "MISSED"])
    return rows


# Not rerun by `make bench` (bench/front_bench.py needs nginx and ~3 min): the stack helper's figures, from its
# section of BENCHMARKS.md ("Worker model behind the nginx front", run 2026-12-02 15:39 UTC).
TOPOLOGY_ROWS = [
    ["issue 11", "32 concurrent misses behind the front, capacity 36: no 503 (front_bench.py, its 15:39 UTC run)",
     "1 process x 2 or 4 slots: 0/64 in every round; 2 processes: 4-20/64", "met (1 process, the default)"],
]


def summary_md(raw, info, total, quick):
    """The one screen BENCHMARKS.md opens with: the command, when, the load, every target of this run."""
    rows = []
    for r in raw.get("issue12_targets", []):
        rows.append(["issue 12", r[0], f"{r[1]} vs {r[2]} = {r[3]}" if r[3] and not r[0].startswith("PSNR")
                     else f"{r[1]} ({r[3]})", r[4]])
    for r in raw.get("issue4_targets", []):
        # (the detail keeps the long form: the list of cases over, the slow-PUT proxy run)
        rows.append(["issue 4", r[0].strip(), r[1].split(" (over:")[0].split("; with PUT")[0], r[2]])
    rows += _extra_rows(raw)
    rows += TOPOLOGY_ROWS
    la0 = " ".join(f"{v:.2f}" for v in info["loadavg_start"])
    la1 = " ".join(f"{v:.2f}" for v in os.getloadavg())
    head = [
        f"Command: `make bench`{' BENCH_ARGS=--quick (smoke test: numbers not for quoting)' if quick else ''} "
        f"— {total / 60:.1f} min for this run (venv in place), started {raw['started']}, "
        f"load average {la0} at the start and {la1} at the end; {info['nproc']} cores ({info['cpu']}), "
        f"{info.get('imagemagick', '?').split(' http')[0]}.",
        "",
        table(["issue", "target", "measured (this run)", "met?"], rows),
    ]
    return "\n".join(head) + "\n"


# ---------------------------------------------------------------- targets


def _matrix(h, label_start):
    for m in h.get("matrix", []):
        if m["label"].startswith(label_start):
            return m
    return None


def targets(report, raw):
    rows = []
    micro = raw.get("micro")
    if micro:
        case = next(r for r in micro if r["input"] == "24mp.jpg" and r["box"] == 200)
        ms = case["ms"]
        v = ratio(ms["ours"], ms["naive"])
        rows.append(["render 24 MP -> 200 ≤ 0.10x naive Wand", x(v, 3), mark(v <= 0.10)])
        v = ratio(ms["ours"], ms["pyvips"])
        rows.append(["render 24 MP -> 200 ≤ 1.0x pyvips", x(v, 3), mark(v <= 1.0)])
        v = ratio(ms["ours"], _floor(ms))
        rows.append(["render 24 MP -> 200 ≤ 1.25x DCT-1/8 decode floor", x(v, 3), mark(v <= 1.25)])
        growth = next(r["growth_mb"] for r in raw["rss"]
                      if r["input"] == "24mp.jpg" and r["box"] == 200 and r["method"] == "ours")
        rows.append(["render 24 MP -> 200 peak RSS growth ≤ 48 MB", f"{growth:.1f} MB", mark(growth <= 48)])
        worst = max(micro, key=lambda r: r["ms"]["ours"] / r["ms"]["pyvips"])
        over = [f"{r['input']}→{r['box']} {r['ms']['ours'] / r['ms']['pyvips']:.2f}x" for r in micro
                if r["ms"]["ours"] / r["ms"]["pyvips"] > 1.15]
        rows.append(["render, every input and box ≤ 1.15x pyvips",
                     f"worst {worst['input']}→{worst['box']} {worst['ms']['ours'] / worst['ms']['pyvips']:.2f}x; "
                     f"{len(micro) - len(over)}/{len(micro)} cases within" + (f" (over: {', '.join(over)})" if over else ""),
                     mark(not over)])
    h = raw.get("http")
    if h:
        o8, t8 = h["ours"][-1], h["thumbor"][-1]
        v = ratio(o8["throughput"], t8["throughput"])
        extra = ""
        if h.get("thumbor_tuned"):
            extra = f"; vs tuned thumbor {x(ratio(o8['throughput'], h['thumbor_tuned'][-1]['throughput']))}"
        rows.append(["HTTP 12 MP -> 200, c=8 throughput ≥ 1.5x thumbor", x(v) + extra, mark(v >= 1.5)])
        for one, two in (("sync, 1 worker", "sync, 2 workers"),
                         ("gthread, 1 worker, 1 render slot", "gthread, 2 workers, 1 render slot")):
            a, b = _matrix(h, one), _matrix(h, two)
            if a and b:
                v = ratio(b["throughput"], a["throughput"])
                rows.append([f"2 worker processes ≥ 1.8x 1 ({one.split(',')[0]}"
                             f"{', 1 render slot' if 'slot' in one else ''}, c=8)",
                             f"{x(v)} ({b['throughput']:.2f} vs {a['throughput']:.2f} req/s)", mark(v >= 1.8)])
        p50_1 = h["ours"][0]["p50_ms"]
        p99_8 = o8["p99_ms"]
        rows.append(["p99 at c=8 ≤ 4x p50 at c=1 (stock)", f"{p99_8:.0f} ms = {p99_8 / p50_1:.2f}x {p50_1:.0f} ms",
                     mark(p99_8 <= 4 * p50_1)])
        best = min(h.get("matrix", []) or [o8], key=lambda m: m["p99_ms"])
        if best.get("label") and not best["label"].startswith("stock ("):
            rows.append(["  (lowest p99 of the worker models at c=8: " + best["label"] + ")",
                         f"{best['p99_ms']:.0f} ms = {best['p99_ms'] / p50_1:.2f}x", mark(best["p99_ms"] <= 4 * p50_1)])
        t1, put = h["ours"][0]["timing"], h["put"]
        ok = t1["rest_ms"] < put["median_ms"] or t1["rest_ms"] < 0.1 * t1["latency_ms"]
        slow = h.get("slow_put", {}).get("timing")
        text = (f"latency {t1['latency_ms']:.1f} = fetch {t1['fetch_ms']:.1f} + render {t1['render_ms']:.1f} "
                f"+ {t1['rest_ms']:.1f}; PUT alone {put['median_ms']:.1f}")
        if slow:
            text += f"; with PUT +250 ms: latency {slow['latency_ms']:.1f}, rest {slow['rest_ms']:.1f}"
            ok = ok and slow["rest_ms"] < 125
        rows.append(["miss latency excludes the S3 PUT", text, mark(ok)])
    if rows:
        report.section("Targets (issue 4), from this run")
        report.add(table(["target", "measured", ""], rows))
        raw["issue4_targets"] = rows


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc}); servers were stopped", file=sys.stderr)
        sys.exit(130)

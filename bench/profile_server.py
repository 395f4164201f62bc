"""Where a cold miss's CPU goes: py-spy on the real server's gunicorn workers under the benchmark load.

    make -C bench venv && cd bench && PYTHONPATH=.. MAGICK_CONFIGURE_PATH=../deploy \\
        ../.venv-bench/bin/python profile_server.py [--quick] [--requests 96] [--concurrency 8]

(run.py calls ``main()`` as part of ``make bench``.)  The stock server
(``devstack.start_gunicorn``, as bench/http_bench.py starts it) reads a 12 MP
JPEG from s3rver for every request (each a distinct key, -> 200x200) while
``py-spy record --native -r 200 --format raw`` samples every worker (Python
and native frames, active threads only).  Each sample's stack is put in ONE
category (the first rule below that matches, outermost frame first); the
fractions are then scaled by the workers' CPU time measured from /proc over the
same window, giving ms of CPU per miss.  The samples-vs-/proc coverage is
printed: py-spy counts a thread as active when it is on a CPU, so the two agree
when the sampling is faithful.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench  # noqa: E402
from common import LOGS, WORK, ensure_inputs, fmt, table  # noqa: E402

from resize_server import devstack  # noqa: E402

RATE = 200  # samples per second per thread

# (category, test on the whole stack as one string, frames joined by ";", outermost first).
# Order matters: the first match wins, so the specific S3 calls come before the
# generic HTTP framework, and the engine's sub-steps before "engine, other".
_ENGINE = "wand_engine.py"
CATEGORIES = [
    ("derived-key GET (S3, 404)", lambda s: "_stored_or_none" in s),
    ("S3 PUT (store queue)", lambda s: "s3.py" in s and re.search(r"\bput \(resize_server/storage/s3\.py", s)),
    ("S3 GET (source)", lambda s: re.search(r"\bget \(resize_server/storage/s3\.py", s)),
    ("decode (ImageMagick read, jpeg:size)", lambda s: _ENGINE in s and re.search(
        r"read \(wand/image\.py|MagickReadImage|ReadImage|ReadJPEGImage|jpeg_", s)),
    ("encode (make_blob: strip, JPEG q85)", lambda s: _ENGINE in s and re.search(
        r"make_blob|MagickGetImageBlob|WriteJPEGImage|ImageToBlob|strip \(wand", s)),
    ("post-decode (orient, scale/resize, clone)", lambda s: _ENGINE in s and re.search(
        r"auto_orient|resize \(wand|scale \(wand|clone|MagickResize|MagickScale|ResizeImage|ScaleImage|"
        r"AutoOrient|_resize \(resize_server", s)),
    ("engine, other (Image(), destroy, options)", lambda s: _ENGINE in s),
    ("sniff + limits + plan (pure Python)", lambda s: re.search(r"sniff\.py|limits\.py|geometry\.py", s)),
    ("logging (JSON line, request log)", lambda s: re.search(r"logging/|logs\.py|requestlog\.py", s)),
    ("metrics (prometheus multiprocess)", lambda s: re.search(r"prometheus_client|metrics\.py", s)),
    # Every thread's stack starts in threading.py: only the innermost Python frame counts here.
    ("locks and queues (gate, single-flight, store queue, futures)", lambda s: re.search(
        r"(threading\.py|queue\.py|concurrent/futures/\w+\.py|resize_server/flow\.py|resize_server/coordination\.py)",
        _innermost_python(s))),
    ("resize_server's own Python (service, views, key parsing, ETag)",
     lambda s: "resize_server/" in _innermost_python(s)),
    ("HTTP framework (gunicorn, werkzeug, flask)", lambda s: re.search(r"gunicorn/|werkzeug/|flask/|http/views\.py|"
                                                                      r"http/__init__|http/errors", s)),
]
OTHER = "other"
_PY_FRAME = re.compile(r"\([^()]*\.py:\d+\)")


def _innermost_python(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        if _PY_FRAME.search(frame):
            return frame
    return ""


def classify(stack: str) -> str:
    for name, test in CATEGORIES:
        if test(stack):
            return name
    return OTHER


# A thread waiting (for a lock, a queue, a socket, a timer) is not on a CPU.  py-spy 0.4's own idle
# detection does not work here (it counted every thread of the workers as active: 7-20x the CPU
# /proc measures), so a sample is idle when its innermost frames are a blocking wait: one of these
# CPython/C entry points with only libc below it, or one of these libc calls as the leaf.
_WAIT_ENTRIES = {"PyThread_acquire_lock_timed", "select_epoll_poll_impl", "select_poll_poll_impl",
                 "select_select_impl", "pysleep", "time_sleep", "internal_select", "sock_accept",
                 # also the GIL: a thread waiting in take_gil is not running
                 "pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait", "sem_wait",
                 "sem_timedwait", "sem_clockwait", "take_gil"}
_WAIT_LEAVES = {"poll", "ppoll", "epoll_wait", "epoll_pwait", "select", "pselect", "clock_nanosleep", "nanosleep",
                "accept", "accept4", "sem_wait", "sem_timedwait", "sem_clockwait", "pthread_cond_wait",
                "pthread_cond_timedwait", "pthread_cond_clockwait", "__futex_abstimed_wait_common",
                "futex_wait", "do_futex_wait", "waitpid", "wait4", "pause", "sigtimedwait"}
_LIBC = re.compile(r"\((libc\.so|libpthread\.so|ld-linux)")


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def is_idle(stack: str) -> bool:
    frames = stack.split(";")
    if _name(frames[-1]) in _WAIT_LEAVES:
        return True
    for i in range(len(frames) - 1, -1, -1):
        if _name(frames[i]) in _WAIT_ENTRIES:
            return all(_LIBC.search(f) for f in frames[i + 1:])
        if not _LIBC.search(frames[i]):
            return False
    return False


def parse_raw(text: str) -> tuple[Counter, int]:
    """py-spy's raw (collapsed) format: 'frame;frame;... count' per line; returns active stacks, idle count."""
    stacks = Counter()
    idle = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if stack.startswith("thread ("):  # --threads prefix
            stack = stack.split(";", 2)[-1]
        if is_idle(stack):
            idle += int(count)
        else:
            stacks[stack] += int(count)
    return stacks, idle


def breakdown(stacks: Counter) -> tuple[Counter, dict]:
    per_cat = Counter()
    examples: dict[str, Counter] = {}
    for stack, n in stacks.items():
        cat = classify(stack)
        per_cat[cat] += n
        leaf = stack.rsplit(";", 1)[-1]
        examples.setdefault(cat, Counter())[re.sub(r" \(.*", "", leaf)] += n
    return per_cat, {c: [f"{k} {v}" for k, v in ex.most_common(4)] for c, ex in examples.items()}


def pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy not found: `make -C bench venv` installs it (bench/requirements.txt)")
    return found


def main(source_path: Path, out_json: Path, quick: bool = False, requests: int | None = None,
         concurrency: int = 8, log=print) -> dict:
    LOGS.mkdir(parents=True, exist_ok=True)
    requests = requests or (24 if quick else 96)
    data = source_path.read_bytes()
    procs = http_bench.Procs()
    spies: list[subprocess.Popen] = []
    data_dir = Path(tempfile.mkdtemp(prefix="resize-profile-s3-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    prof_dir = WORK / f"profile-c{concurrency}"
    shutil.rmtree(prof_dir, ignore_errors=True)
    prof_dir.mkdir(parents=True)
    try:
        s3_port = devstack.free_port()
        s3rver = procs.add(devstack.start_s3rver(s3_port, data_dir, log_file=open(LOGS / "profile-s3rver.log", "wb")))
        client = devstack.s3rver_client(s3_port)
        devstack.prepare_bucket(client, http_bench.BUCKET, f"{http_bench.HOST}:1")
        sources = http_bench.Sources(client, data, s3rver.pid)
        server = http_bench.Server("resize-server (stock)", lambda: http_bench.start_ours(
            procs, s3_port, {}, [], "profile-ours"), http_bench.ours_path)
        http_bench.start_servers(procs, [server], sources, 60.0, log)
        workers = [p for p in http_bench.process_tree(server.proc.pid) if p != server.proc.pid]
        keys = sources.fresh(requests)
        paths = [server.to_path(k) for k in keys]
        for pid in workers:
            out = prof_dir / f"worker-{pid}.txt"
            spies.append(subprocess.Popen(
                [pyspy(), "record", *os.environ.get("PYSPY_FLAGS", "--native").split(), "-r", str(RATE), "--format", "raw", "-o", str(out), "-p", str(pid)],
                stdout=open(prof_dir / f"py-spy-{pid}.log", "wb"), stderr=subprocess.STDOUT))
        time.sleep(1.5)  # py-spy attaches
        c0 = http_bench.cpu_s(workers)
        master0 = http_bench.cpu_s([server.proc.pid])
        s3_0 = http_bench.cpu_s([s3rver.pid])
        t0 = time.perf_counter()
        res = http_bench.run_level(server.port, paths, concurrency, "profile", 120.0)
        # The store queue writes after the response: let it finish inside the window.
        time.sleep(1.0)
        wall = time.perf_counter() - t0
        c1 = http_bench.cpu_s(workers)
        master1 = http_bench.cpu_s([server.proc.pid])
        s3_1 = http_bench.cpu_s([s3rver.pid])
        spy_cpu = http_bench.cpu_s([s.pid for s in spies])
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        stacks = Counter()
        idle = 0
        for path in prof_dir.glob("worker-*.txt"):
            active, n_idle = parse_raw(path.read_text(errors="replace"))
            stacks.update(active)
            idle += n_idle
        sources.delete(keys)
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
        procs.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
    misses = res.ok + res.errors
    per_cat, examples = breakdown(stacks)
    total_samples = sum(per_cat.values())
    cpu_ms_per_miss = (c1 - c0) * 1000 / max(1, misses)
    result = {
        "requests": misses, "ok": res.ok, "errors": res.errors, "error_samples": res.error_samples[:3],
        "concurrency": concurrency, "wall_s": wall, "rate": RATE,
        "worker_cpu_s": c1 - c0, "master_cpu_s": master1 - master0, "s3rver_cpu_s": s3_1 - s3_0,
        "pyspy_cpu_s": spy_cpu,
        "cpu_ms_per_miss": cpu_ms_per_miss,
        "samples": total_samples, "idle_samples": idle, "sampled_cpu_s": total_samples / RATE,
        "categories": {c: {"samples": n, "share": n / total_samples if total_samples else 0.0,
                           "ms_per_miss": cpu_ms_per_miss * n / total_samples if total_samples else 0.0}
                       for c, n in per_cat.most_common()},
        "examples": examples,
        "throughput": res.ok / res.wall_s if res.wall_s else 0.0,
    }
    out_json.write_text(json.dumps(result, indent=1))
    return result


ORDER = [name for name, _ in CATEGORIES] + [OTHER]


def profile_table(p: dict) -> str:
    rows = []
    for cat in ORDER:
        c = p["categories"].get(cat)
        if c:
            rows.append([cat, fmt(c["ms_per_miss"], 2), fmt(100 * c["share"], 1), c["samples"],
                         "; ".join(p["examples"].get(cat, [])[:3])])
    rows.append(["total (workers' CPU from /proc)", fmt(p["cpu_ms_per_miss"], 2), "100.0", p["samples"], ""])
    return table(["where", "CPU ms per miss", "%", "samples", "top leaf frames (samples)"], rows)


def profile_notes(p: dict) -> str:
    coverage = p["sampled_cpu_s"] / p["worker_cpu_s"] if p["worker_cpu_s"] else float("nan")
    return (f"{p['ok']}/{p['requests']} misses at concurrency {p['concurrency']} in {p['wall_s']:.1f} s "
            f"({p['throughput']:.2f} req/s while profiled); workers' CPU {p['worker_cpu_s']:.2f} s "
            f"(master {p['master_cpu_s']:.2f} s, s3rver {p['s3rver_cpu_s']:.2f} s, py-spy itself "
            f"{p['pyspy_cpu_s']:.2f} s); {p['idle_samples']} samples of waiting threads left out; "
            f"{p['samples']} active-thread samples at {p['rate']} Hz = "
            f"{p['sampled_cpu_s']:.2f} s, {100 * coverage:.0f}% of the measured CPU.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", default=str(WORK / "profile.json"))
    a = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    prof = main(ensure_inputs()["12mp.jpg"], Path(a.json), a.quick, a.requests, a.concurrency)
    print(profile_table(prof))
    print()
    print(profile_notes(prof))

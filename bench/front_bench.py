"""Worker model behind the nginx front: which gunicorn process/thread layout serves misses best.

    .venv/bin/python bench/front_bench.py [--requests 64] [--concurrency 32]

The production topology of one instance on loopback: s3rver, gunicorn on a unix socket,
nginx (deploy/nginx.conf) in front.  For each layout, every request is a distinct, not yet
rendered key (12 MP JPEG -> 200x200), sent through nginx in a burst of ``--concurrency``
at a time; then ``--concurrency 2`` for latency.  Each layout has the same documented
capacity (render slots + waiting room = 36).  Bounded: a fixed number of requests per
layout, 60 s timeout each.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_inputs, median, percentile  # noqa: E402

from resize_server import devstack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = {
    # name: (workers, threads, render slots per process, waiting room per process)
    "1 process x 44 threads, 2 slots": (1, 44, 2, 34),
    "1 process x 44 threads, 4 slots": (1, 44, 4, 32),
    "2 processes x 26 threads, 2 slots each (old default)": (2, 26, 2, 16),
    "2 processes x 26 threads, 1 slot each": (2, 26, 1, 17),
}


def fetch(port: int, path: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - t0
    finally:
        conn.close()


def run_layout(name, layout, s3_port, client, source: bytes, args, counter) -> dict:
    workers, threads, slots, waiting = layout
    run_dir = Path(tempfile.mkdtemp(prefix="resize-bench-front-"))
    run_dir.chmod(0o755)
    port, image_port = devstack.free_port(), devstack.free_port()
    env = {**devstack.server_env(s3_port, "bench"), "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy"),
           "RESIZE_WORKERS": str(workers), "RESIZE_THREADS": str(threads), "RESIZE_RENDER_CONCURRENCY": str(slots),
           "RESIZE_QUEUE_SIZE": str(waiting), "RESIZE_QUEUE_TIMEOUT": "30", "RESIZE_LOG_LEVEL": "WARNING",
           "RESIZE_STARTUP_CHECK": "false"}
    procs = []
    try:
        with open(run_dir / "gunicorn.log", "wb") as log:
            procs.append(devstack.start_gunicorn(None, env, log_file=log, socket_path=run_dir / "gunicorn.sock"))
        conf = devstack.stack_nginx_conf(run_dir / "nginx", resize_port=port, image_port=image_port,
                                         socket_path=run_dir / "gunicorn.sock", s3_port=s3_port, bucket="bench")
        procs.append(devstack.start_nginx(conf, run_dir / "nginx", [port, image_port]))

        def keys(n):
            out = []
            for _ in range(n):
                counter[0] += 1
                key = f"b/img{counter[0]:05d}.jpg"
                client.copy_object(Bucket="bench", Key=key, CopySource={"Bucket": "bench", "Key": "src.jpg"})
                out.append(f"/resize.php?src={key[:-4]}_200x200.jpg")
            return out

        fetch(port, keys(1)[0])  # warm-up: imports, first boto3 connection
        results = {}
        for concurrency in (args.concurrency, 2):
            paths = keys(args.requests)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                done = list(pool.map(lambda p: fetch(port, p), paths))
            wall = time.perf_counter() - t0
            ok = [t for s, t in done if s == 200]
            results[concurrency] = {
                "rps": len(ok) / wall, "p50": median(ok) * 1000 if ok else float("nan"),
                "p99": percentile(ok, 99) * 1000 if ok else float("nan"),
                "503": sum(s == 503 for s, _ in done), "other": sum(s not in (200, 503) for s, _ in done),
            }
        return results
    finally:
        for proc in reversed(procs):
            devstack.stop(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every layout, interleaved")
    args = parser.parse_args()
    source = ensure_inputs()["12mp.jpg"].read_bytes()
    data_dir = Path(tempfile.mkdtemp(prefix="resize-bench-s3-"))
    s3_port = devstack.free_port()
    s3 = devstack.start_s3rver(s3_port, data_dir)
    try:
        client = devstack.s3rver_client(s3_port)
        client.create_bucket(Bucket="bench")
        client.put_object(Bucket="bench", Key="src.jpg", Body=source, ContentType="image/jpeg")
        counter = [0]
        rows = {name: [] for name in LAYOUTS}
        for _ in range(args.rounds):
            for name, layout in LAYOUTS.items():
                rows[name].append(run_layout(name, layout, s3_port, client, source, args, counter))
                print(f"done: {name}", file=sys.stderr, flush=True)
        c = args.concurrency
        print(f"\n| layout (capacity 36 each) | c={c} req/s | c={c} p50 ms | c={c} p99 ms | c={c} 503s "
              f"| c=2 req/s | c=2 p50 ms |")
        print("|---|---|---|---|---|---|---|")
        for name, runs in rows.items():
            for r in runs:
                print(f"| {name} | {r[c]['rps']:.2f} | {r[c]['p50']:.0f} | {r[c]['p99']:.0f} | "
                      f"{r[c]['503']}/{args.requests} | {r[2]['rps']:.2f} | {r[2]['p50']:.0f} |")
        return 0
    finally:
        devstack.stop(s3)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Pre-generation throughput: 3 presets (50, 200, 1024) for each 12 MP JPEG upload, three ways, one run.

* **worker**: ``service.pregenerate(key)``, what the SQS worker and Lambda call: one S3 read,
  one decode (at the scale the largest preset needs), three encodes, three PUTs.
* **naive**: the classic AWS sample Lambda as written, once per preset: ``download_file`` to a
  temporary file, Pillow ``Image.open`` + ``thumbnail()`` + ``save`` to a temporary file,
  ``upload_file``.
* **on-demand**: the on-demand path once per preset, ``service.resize_key("<stem>_WxH.jpg")``
  (a read and a decode each), stores drained after every upload.

S3 is s3rver on loopback with its data on tmpfs.  Every (round, contender) runs in a fresh
Python process (so its peak RSS, VmHWM, is that contender's own), with ImageMagick on one
thread (Pillow has one), on fresh keys copied server-side from one master upload; the order
of the contenders rotates each round.  Throughput = uploads (3 outputs each) per second of
wall time, one upload at a time.

    make -C bench pregen            # or: make -C bench pregen BENCH_ARGS="--rounds 5 --uploads 8"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LOGS, RESULTS, WORK, ensure_inputs, fmt, machine_info, median, table  # noqa: E402

BUCKET = "images"
PRESETS = {"p50": (50, 50), "p200": (200, 200), "p1024": (1024, 1024)}
CONTENDERS = ("worker", "naive", "on-demand")


# ---------------------------------------------------------------- one contender, in its own process


def _rss_kb() -> int:
    """This process's peak RSS (VmHWM): ru_maxrss would carry the driver's peak across fork+exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(contender: str, port: int, keys: list[str]) -> dict:
    from resize_server import devstack
    from resize_server.config import Settings
    from resize_server.service import build_service
    from resize_server.storage.s3 import S3Storage

    client = devstack.s3rver_client(port)
    if contender == "naive":
        from PIL import Image

        tmp_dir = Path(tempfile.mkdtemp(prefix="naive-", dir=WORK))

        def one(key: str) -> int:
            outputs = 0
            for name, box in PRESETS.items():
                # The sample's handler, per preset (it never deletes its files: we do, to keep the disk clean).
                download_path = tmp_dir / f"{os.urandom(8).hex()}{key.replace('/', '')}"
                upload_path = tmp_dir / f"resized-{key.replace('/', '')}"
                client.download_file(BUCKET, key, str(download_path))
                with Image.open(download_path) as image:
                    image.thumbnail(box)
                    image.save(upload_path)
                client.upload_file(str(upload_path), BUCKET, key.replace(".jpg", f"_{name}.jpg"))
                download_path.unlink()
                upload_path.unlink()
                outputs += 1
            return outputs
    else:
        settings = Settings.from_mapping({
            "bucket": BUCKET, "s3_endpoint_url": f"http://127.0.0.1:{port}",
            "presets": ",".join(f"{n}={w}x{h}" for n, (w, h) in PRESETS.items()),
            "render_concurrency": "1"}).validate()
        service = build_service(settings, storage=S3Storage(client, BUCKET))
        if contender == "worker":
            def one(key: str) -> int:
                result = service.pregenerate(key)
                assert [state for *_, state in result.outputs] == ["rendered"] * 3, result
                return len(result.outputs)
        else:
            def one(key: str) -> int:
                stem = key[:-4]
                for w, h in PRESETS.values():
                    service.resize_key(f"{stem}_{w}x{h}.jpg")
                service.drain()
                return len(PRESETS)

    rss_imports = _rss_kb()  # peak of imports and set-up (the service's start-up format probe included)
    try:
        # Reset the peak (Linux: "5" clears VmHWM) so that what follows is the renders' own peak.
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    one(keys[0])  # warm-up: first-call costs, not timed
    rss_warm = _rss_kb()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    outputs = sum(one(key) for key in keys[1:])
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    if contender == "naive":
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"contender": contender, "uploads": len(keys) - 1, "outputs": outputs, "wall_s": wall, "cpu_s": cpu,
            "rss_imports_kb": rss_imports, "rss_after_warmup_kb": rss_warm, "rss_peak_kb": _rss_kb(),
            "peak_was_reset": reset}


# ---------------------------------------------------------------- the driver


def run(rounds: int, uploads: int, log=print) -> dict:
    from resize_server import devstack

    LOGS.mkdir(parents=True, exist_ok=True)
    source = ensure_inputs(log)["12mp.jpg"]
    data = source.read_bytes()
    data_dir = Path(tempfile.mkdtemp(prefix="resize-pregen-s3-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    port = devstack.free_port()
    results: dict = {"machine": machine_info(), "rounds": rounds, "uploads": uploads,
                     "source_bytes": len(data), "runs": []}
    proc = devstack.start_s3rver(port, data_dir, log_file=open(LOGS / "s3rver-pregen.log", "wb"))
    counter = 0
    try:
        client = devstack.s3rver_client(port)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="bench/master.jpg", Body=data, ContentType="image/jpeg")
        env = {**os.environ, "MAGICK_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"}
        for r in range(rounds):
            order = CONTENDERS[r % 3:] + CONTENDERS[:r % 3]
            for contender in order:
                keys = []
                for _ in range(uploads + 1):
                    counter += 1
                    key = f"bench/up{counter:05d}.jpg"
                    client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": "bench/master.jpg"},
                                       ContentType="image/jpeg", MetadataDirective="REPLACE")
                    keys.append(key)
                out = subprocess.run([sys.executable, __file__, "--child", contender, "--port", str(port),
                                      "--keys", ",".join(keys)], env=env, capture_output=True, text=True, timeout=900)
                if out.returncode != 0:
                    raise RuntimeError(f"{contender} failed:\n{out.stderr[-3000:]}")
                run_result = json.loads(out.stdout.strip().splitlines()[-1])
                run_result["round"] = r
                results["runs"].append(run_result)
                log(f"  round {r + 1} {contender:9s}: {run_result['uploads'] / run_result['wall_s']:.2f} uploads/s, "
                    f"peak RSS {run_result['rss_peak_kb'] / 1024:.0f} MB")
                listed = client.list_objects_v2(Bucket=BUCKET, Prefix="bench/up").get("Contents", [])
                if listed:
                    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]} for o in listed],
                                                                  "Quiet": True})
    finally:
        devstack.stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
    results["loadavg_end"] = os.getloadavg()
    return results


def report(results: dict) -> str:
    by = {c: [r for r in results["runs"] if r["contender"] == c] for c in CONTENDERS}
    tput = {c: [r["uploads"] / r["wall_s"] for r in runs] for c, runs in by.items()}
    # Ratios from the same round (the machine is shared: drift hits every contender of a round alike).
    ratio = {c: median([tput["worker"][i] / tput[c][i] for i in range(len(tput[c]))]) for c in ("naive", "on-demand")}
    rows = []
    for c in CONTENDERS:
        runs = by[c]
        rows.append([
            c, fmt(median(tput[c]), 2), fmt(median(tput[c]) * 3, 2),
            fmt(median([1000 * r["wall_s"] / r["uploads"] for r in runs]), 0),
            fmt(median([1000 * r["cpu_s"] / r["uploads"] for r in runs]), 0),
            fmt(max(r["rss_imports_kb"] for r in runs) / 1024, 0),
            fmt(max(r["rss_peak_kb"] for r in runs) / 1024, 0) + ("" if all(r["peak_was_reset"] for r in runs)
                                                                  else " (incl. set-up)"),
            "1.00x" if c == "worker" else f"{ratio[c]:.2f}x",
        ])
    m = results["machine"]
    lines = [
        f"12 MP JPEG uploads ({results['source_bytes'] / 1e6:.1f} MB, 4243x2828), 3 presets each (50, 200, 1024 "
        f"boxes); {results['rounds']} rounds x {results['uploads']} uploads per contender, one upload at a time, "
        f"s3rver on loopback (tmpfs). {m['cpu']}, {m['affinity']} cores, ImageMagick {m.get('imagemagick', '?')}, "
        f"Pillow {m.get('pillow', '?')}. Load average {m['loadavg_start'][0]:.2f} at the start, "
        f"{results['loadavg_end'][0]:.2f} at the end (a shared machine). \"worker is\": the median over rounds of "
        f"worker throughput / that contender's in the same round; CPU is the contender process's own "
        f"(s3rver's is not counted); peak RSS set-up = VmHWM after imports and set-up (the service probes its encoders at start); peak RSS renders = VmHWM over the warm-up and the timed uploads, after resetting it.",
        "",
        table(["contender", "uploads/s", "outputs/s", "ms/upload", "CPU ms/upload", "peak RSS set-up MB",
               "peak RSS renders MB", "worker is"], rows),
        "",
        f"Targets: worker >= 3x naive: {'met' if ratio['naive'] >= 3 else 'NOT met'} ({ratio['naive']:.2f}x); "
        f"worker >= 2x on-demand per preset: {'met' if ratio['on-demand'] >= 2 else 'NOT met'} "
        f"({ratio['on-demand']:.2f}x).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=6)
    parser.add_argument("--child", choices=CONTENDERS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--keys")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.port, args.keys.split(","))))
        return 0
    t0 = time.perf_counter()
    results = run(args.rounds, args.uploads)
    text = report(results)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    # Short smoke runs (fewer than 3 rounds) do not overwrite the quoted results.
    name = "pregen.md" if args.rounds >= 3 else "pregen-quick.md"
    (RESULTS / name).write_text(text + "\n")
    (WORK / "pregen.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"({time.perf_counter() - t0:.0f} s; raw numbers in bench/.work/pregen.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

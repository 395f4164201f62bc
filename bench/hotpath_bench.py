"""The miss's non-render steps, each before and after issue 12's changes, in the same interleaved rounds.

CPU time of the calling thread (``time.thread_time``), medians; S3 is s3rver on loopback (tmpfs).

* ``is_complete`` on the 12 MP source: the end-marker search forward (before) vs from the end (now).
* The source GET (3.6 MB): boto3 ``get_object`` read in 256 KiB chunks and joined (before) vs the package's
  ``S3Storage.get`` (one read up to the cap, now); also a raw ``http.client`` GET, for scale.
* The lanczos pass after a DCT-1/8 decode: Wand's ``resize()`` (before) vs ``MagickResizeImage`` (now).
* What else a miss calls: the derived-key GET (a 404), a HEAD 404 (the alternative), the PUT of the thumbnail.

    cd bench && PYTHONPATH=.. MAGICK_THREAD_LIMIT=1 ../.venv-bench/bin/python hotpath_bench.py [--rounds 25]

(run.py runs it in a child process with MAGICK_THREAD_LIMIT=1, as the server has it.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LOGS, WORK, ensure_inputs, fmt, median, table  # noqa: E402

from resize_server import devstack, sniff  # noqa: E402
from resize_server.storage.base import StoredObject  # noqa: E402
from resize_server.storage.s3 import S3Storage, make_client  # noqa: E402

BUCKET = "hotpath"
MAX = 30 * 1024 * 1024


def is_complete_before(data: bytes) -> bool:
    """sniff.is_complete for a JPEG as of commit 01ce0c7: a forward search from the first scan."""
    return data.find(b"\xff\xd9", sniff._jpeg_scan_start(data)) != -1


def get_before(storage: S3Storage, key: str) -> bytes:
    """S3Storage.get's read as of commit 01ce0c7: 256 KiB chunks, joined at the end."""
    response = storage.client.get_object(Bucket=storage.bucket, Key=key)
    body = response["Body"]
    chunks = []
    while True:
        chunk = body.read(256 * 1024)
        if not chunk:
            break
        chunks.append(chunk)
    body.close()
    return b"".join(chunks)


def main(source: Path, out_json: Path, rounds: int = 25, log=print) -> dict:
    data = source.read_bytes()
    LOGS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="resize-hotpath-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    port = devstack.free_port()
    proc = devstack.start_s3rver(port, folder, log_file=open(LOGS / "hotpath-s3rver.log", "wb"))
    saved = {k: os.environ.get(k) for k in devstack.S3RVER_CREDENTIALS}
    try:
        os.environ.update(devstack.S3RVER_CREDENTIALS)  # make_client reads credentials from the environment
        admin = devstack.s3rver_client(port)
        admin.create_bucket(Bucket=BUCKET)
        admin.put_object(Bucket=BUCKET, Key="src/12mp.jpg", Body=data, ContentType="image/jpeg")
        storage = S3Storage(make_client(devstack.s3rver_settings(port, BUCKET)), BUCKET)
        thumb = StoredObject(key="src/12mp_200x200.jpg", data=os.urandom(8400), content_type="image/jpeg",
                             cache_control="public, max-age=31536000, immutable", storage_class="STANDARD",
                             metadata={"derived-from": "src/12mp.jpg", "source-etag": "x" * 32,
                                       "resize": "200x200:fit"})

        def raw_get():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/{BUCKET}/src/12mp.jpg")
            conn.getresponse().read()
            conn.close()

        def missing(fn):
            def call():
                try:
                    fn()
                except Exception:
                    pass
            return call

        from wand.image import Image

        from resize_server.imaging import geometry
        from resize_server.imaging.wand_engine import _resize_one_frame

        header = sniff.read_header(data)
        plan = geometry.plan(header, 200, 200, "fit", False)
        decoded = Image()
        decoded.options["jpeg:size"] = "%dx%d" % plan.load_hint
        decoded.read(blob=data, format="jpeg[0]")  # 531x354, the DCT-1/8 decode

        def resize_with(fn):
            def call():
                with decoded.clone() as work:
                    fn(work)
            return call

        def wand_resize(img):
            img.resize(*plan.resize, filter="lanczos")

        def direct_resize(img):
            _resize_one_frame(img, *plan.resize, "lanczos")

        def clone_only(img):
            pass

        cases = {
            "lanczos 531x354 -> 200x133: before (Wand resize(), asks the MIME type)": resize_with(wand_resize),
            "lanczos 531x354 -> 200x133: now (MagickResizeImage)": resize_with(direct_resize),
            "(the clone both of them include)": resize_with(clone_only),
            "is_complete, 12 MP JPEG: before (forward find)": lambda: is_complete_before(data),
            "is_complete, 12 MP JPEG: now (rfind)": lambda: sniff.is_complete(data, "jpeg"),
            "source GET 3.6 MB: before (256 KiB reads, joined)": lambda: get_before(storage, "src/12mp.jpg"),
            "source GET 3.6 MB: now (S3Storage.get, one read)": lambda: storage.get("src/12mp.jpg", MAX),
            "source GET 3.6 MB: raw http.client (no boto3)": raw_get,
            "derived-key GET, a 404 (S3Storage.get)": missing(lambda: storage.get("src/none_200x200.jpg", MAX)),
            "derived-key HEAD, a 404 (boto3 head_object)": missing(
                lambda: storage.client.head_object(Bucket=BUCKET, Key="src/none_200x200.jpg")),
            "PUT of an 8.4 kB thumbnail (S3Storage.put)": lambda: storage.put(thumb),
        }
        for fn in cases.values():  # warm-up: connections, botocore's caches
            fn()
        samples = {name: [] for name in cases}
        names = list(cases)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                t0 = time.thread_time()
                cases[name]()
                samples[name].append((time.thread_time() - t0) * 1000)
    finally:
        devstack.stop(proc)
        shutil.rmtree(folder, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result = {"rounds": rounds, "cpu_ms": {name: median(v) for name, v in samples.items()}}
    out_json.write_text(json.dumps(result, indent=1))
    return result


def hotpath_table(result: dict) -> str:
    return table(["step", "CPU ms (median)"], [[name, fmt(v, 3)] for name, v in result["cpu_ms"].items()])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--json", default=str(WORK / "hotpath.json"))
    a = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    res = main(ensure_inputs()["12mp.jpg"], Path(a.json), a.rounds)
    print(hotpath_table(res))

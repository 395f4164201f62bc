"""Cold-miss latency with and without the concurrent read of the derived key (issue 8, item 8).

A miss now reads the derived key and the source at once, so a key that is already
stored is answered from the store. This measures what that costs a true miss, in
one run, alternating the two so drift hits both alike: service.render() on a real
s3rver (S3 API over HTTP on loopback), 12 MP JPEG -> 200x200, no store.

    MAGICK_CONFIGURE_PATH=deploy PYTHONPATH=. .venv/bin/python bench/miss_latency.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_inputs, fmt, median, percentile, table  # noqa: E402

from resize_server import devstack  # noqa: E402
from resize_server.config import Settings  # noqa: E402
from resize_server.service import build_service  # noqa: E402
from resize_server.storage.s3 import S3Storage  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    data = ensure_inputs()["12mp.jpg"].read_bytes()
    port = devstack.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-s3rver-") as folder:
        proc = devstack.start_s3rver(port, Path(folder))
        try:
            client = devstack.s3rver_client(port)
            client.create_bucket(Bucket="bench")
            client.put_object(Bucket="bench", Key="src/12mp.jpg", Body=data)
            settings = Settings(bucket="bench", s3_endpoint_url=f"http://127.0.0.1:{port}", allowed_sizes=None,
                                store_results=False)
            service = build_service(settings, storage=S3Storage(client, "bench"))
            request = service.request_for("src/12mp_200x200.jpg")
            for _ in range(3):  # warm-up: connections, decoder
                service.render(request, check_stored=True)
            times = {False: [], True: []}
            for i in range(args.rounds * 2):
                check = bool(i % 2)
                t0 = time.perf_counter()
                result = service.render(request, check_stored=check)
                times[check].append((time.perf_counter() - t0) * 1000)
                assert result.source == "render"
            client.put_object(Bucket="bench", Key="src/12mp_200x200.jpg", Body=result.data)
            stored = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                assert service.render(request, check_stored=True).source == "stored"
                stored.append((time.perf_counter() - t0) * 1000)
        finally:
            devstack.stop(proc)
    rows = []
    for label, values in (("miss, source read only (before)", times[False]),
                          ("miss, derived key read alongside (after)", times[True]),
                          ("already stored: answered from the store", stored)):
        rows.append([label, len(values), fmt(median(values)), fmt(percentile(values, 90))])
    print(table(["case", "n", "p50 ms", "p90 ms"], rows))
    print(f"\nratio after/before (p50): {median(times[True]) / median(times[False]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

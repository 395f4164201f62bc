"""HTTP cold-miss benchmark: the real server (gunicorn + s3rver) vs thumbor, on 127.0.0.1 only.

Every request is a distinct, not-yet-rendered key: the 12 MP source is copied
(server-side CopyObject) to ``bench/img00001.jpg`` ... before each phase, and
each copy is requested once at ``_200x200``.  thumbor gets the same bytes
through its HTTP loader from the same s3rver (``/unsafe/fit-in/200x200/...``).
Request loops are bounded in count and in time.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import JPEG_QUALITY, LOGS, WORK, median, percentile  # noqa: E402

from resize_server import devstack  # noqa: E402

BUCKET = "images"
BOX = 200
HOST = "127.0.0.1"
HTTP_BUDGET_S = 330.0  # every request loop stops when the HTTP phase has used this much time
HTTP_DEADLINE = [float("inf")]


# ---------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(x) for x in text)
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids) -> float:
    """User+system CPU seconds of these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine spent busy (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory(pid: int) -> dict:
    """RSS of the whole process tree (master + workers) and the largest worker peak (VmHWM)."""
    pids = process_tree(pid)
    workers = [p for p in pids if p != pid] or [pid]
    return {
        "rss_total_mb": sum(_status_kb(p, "VmRSS") for p in pids) / 1024,
        "worker_hwm_max_mb": max(_status_kb(p, "VmHWM") for p in workers) / 1024,
        "processes": len(pids),
    }


class Procs:
    """Everything started here, stopped by PID (process group) at the end, even on failure."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        devstack.stop(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            try:
                devstack.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {proc.pid}: {exc}", file=sys.stderr)
        self.procs.clear()


# ---------------------------------------------------------------- S3 side


class Sources:
    """The 12 MP source in s3rver, and fresh copies of it under distinct keys."""

    def __init__(self, client, data: bytes, s3rver_pid: int):
        self.client = client
        self.s3rver_pid = s3rver_pid
        self.data = data
        self.counter = itertools.count(1)
        client.put_object(Bucket=BUCKET, Key="bench/master.jpg", Body=data, ContentType="image/jpeg")

    def fresh(self, n: int) -> list[str]:
        keys = [f"bench/img{next(self.counter):05d}.jpg" for _ in range(n)]

        def copy(key):
            self.client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": "bench/master.jpg"},
                                    ContentType="image/jpeg", MetadataDirective="REPLACE")

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(copy, keys))
        return keys

    def delete(self, keys):
        """Drop a finished phase's sources and thumbnails (s3rver keeps them on tmpfs)."""
        derived = [k.replace(".jpg", f"_{BOX}x{BOX}.jpg") for k in keys]
        objs = [{"Key": k} for k in keys + derived]
        for i in range(0, len(objs), 500):
            try:
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": objs[i:i + 500], "Quiet": True})
            except Exception as exc:
                print(f"warning: delete_objects: {exc}", file=sys.stderr)


class DelayPutProxy:
    """A loopback TCP proxy to s3rver that holds every PUT request for ``delay`` seconds.

    Pointing the server at it makes the S3 PUT slow enough that, if the
    client's latency included it, nobody could miss it.
    """

    def __init__(self, target_port: int, delay: float):
        import asyncio

        self.target_port = target_port
        self.delay = delay
        self.port = devstack.free_port()
        self.loop = asyncio.new_event_loop()
        self.puts = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="put-delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")

    def _run(self):
        import asyncio

        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(lambda _loop, _context: None)

        async def pipe(reader, writer, delay_puts):
            try:
                while True:
                    chunk = await reader.read(256 * 1024)
                    if not chunk:
                        break
                    if delay_puts and chunk.startswith(b"PUT "):
                        self.puts += 1
                        await asyncio.sleep(self.delay)
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader, client_writer):
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pipe(client_reader, up_writer, True), pipe(up_reader, client_writer, False),
                                 return_exceptions=True)

        server = loop.run_until_complete(asyncio.start_server(handle, HOST, self.port))
        self._ready.set()
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def close(self):
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# ---------------------------------------------------------------- load


@dataclass
class LevelResult:
    label: str
    concurrency: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_samples: list = field(default_factory=list)
    wall_s: float = 0.0
    latencies_ms: list = field(default_factory=list)
    server_timing: list = field(default_factory=list)
    bytes: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    stopped_by_time: bool = False
    segments: int = 0
    cpu: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # server, s3rver, client, machine (s)
    segment_throughputs: list = field(default_factory=list)

    def absorb(self, seg: "LevelResult", cpu_delta, mem: dict) -> None:
        self.sent += seg.sent
        self.ok += seg.ok
        self.errors += seg.errors
        self.error_samples.extend(seg.error_samples)
        self.wall_s += seg.wall_s
        self.latencies_ms.extend(seg.latencies_ms)
        self.server_timing.extend(seg.server_timing)
        self.bytes.extend(seg.bytes)
        self.stopped_by_time |= seg.stopped_by_time
        self.segments += 1
        self.segment_throughputs.append(seg.ok / seg.wall_s if seg.wall_s else 0.0)
        self.cpu = [a + b for a, b in zip(self.cpu, cpu_delta)]
        for key, value in mem.items():
            self.memory[key] = max(self.memory.get(key, 0), value)

    def summary(self) -> dict:
        return {
            "label": self.label, "concurrency": self.concurrency, "sent": self.sent, "ok": self.ok,
            "errors": self.errors, "error_samples": self.error_samples[:3], "wall_s": round(self.wall_s, 3),
            "throughput": self.ok / self.wall_s if self.wall_s else 0.0,
            "p50_ms": percentile(self.latencies_ms, 50), "p99_ms": percentile(self.latencies_ms, 99),
            "max_ms": max(self.latencies_ms) if self.latencies_ms else None,
            "bytes_median": median(self.bytes), **self.memory, "stopped_by_time": self.stopped_by_time,
            "timing": _timing_summary(self.latencies_ms, self.server_timing),
            "segments": self.segments, "segment_throughputs": [round(v, 2) for v in self.segment_throughputs],
            "cpu_ms_per_req": {name: self.cpu[i] * 1000 / max(1, self.ok + self.errors)
                               for i, name in enumerate(("server", "s3rver", "client"))},
            "cpu_busy": sum(self.cpu[:3]) / self.wall_s if self.wall_s else None,
            "machine_busy": self.cpu[3] / self.wall_s if self.wall_s else None,
        }


def _timing_summary(latencies, timings):
    pairs = [(lat, t) for lat, t in zip(latencies, timings) if t and "fetch" in t and "render" in t]
    if not pairs:
        return None
    return {
        "latency_ms": median([lat for lat, _ in pairs]),
        "fetch_ms": median([t["fetch"] for _, t in pairs]),
        "render_ms": median([t["render"] for _, t in pairs]),
        "rest_ms": median([lat - t["fetch"] - t["render"] for lat, t in pairs]),
        "n": len(pairs),
    }


_TIMING = re.compile(r"(\w+);dur=([0-9.]+)")


def run_level(port: int, paths: list[str], concurrency: int, label: str, time_limit: float) -> LevelResult:
    result = LevelResult(label, concurrency)
    lock = threading.Lock()
    todo = iter(paths)
    deadline = time.perf_counter() + time_limit
    starts, ends = [], []

    def worker():
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            while True:
                with lock:
                    if time.perf_counter() > deadline:
                        result.stopped_by_time = True
                        return
                    path = next(todo, None)
                    if path is None:
                        return
                    result.sent += 1
                t0 = time.perf_counter()
                status, body, timing, err = None, b"", None, None
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    status = resp.status
                    header = resp.getheader("Server-Timing")
                    if header:
                        timing = {k: float(v) for k, v in _TIMING.findall(header)}
                    if resp.will_close:
                        conn.close()
                except Exception as exc:  # connection reset, timeout...
                    err = f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=60)
                t1 = time.perf_counter()
                with lock:
                    starts.append(t0)
                    ends.append(t1)
                    if status == 200 and body[:3] == b"\xff\xd8\xff":
                        result.ok += 1
                        result.latencies_ms.append((t1 - t0) * 1000)
                        result.server_timing.append(timing)
                        result.bytes.append(len(body))
                    else:
                        result.errors += 1
                        result.error_samples.append(err or f"HTTP {status}: {body[:120]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit + 120)
    if starts:
        result.wall_s = max(ends) - min(starts)
    return result


# ---------------------------------------------------------------- servers


def wait_http(port: int, path: str, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    devstack.wait_for_port(port, proc, timeout=timeout)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{path} on {port} did not answer")


def start_ours(procs: Procs, s3_port: int, env_extra: dict, extra_args: list[str], name: str):
    port = devstack.free_port()
    env = {**devstack.server_env(s3_port, BUCKET), **env_extra}
    log = open(LOGS / f"{name}.log", "wb")
    if not extra_args:
        proc = devstack.start_gunicorn(port, env, log_file=log)  # the stock command line
    else:
        full_env = {**os.environ, **env, "RESIZE_BIND": f"{HOST}:{port}"}
        proc = subprocess.Popen(devstack.gunicorn_command(*extra_args), cwd=devstack.ROOT, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.add(proc)
    wait_http(port, "/healthz", proc)
    return proc, port


def start_thumbor(procs: Procs, s3_port: int, processes: int, threadpool: int, name: str, curl: bool = True):
    port = devstack.free_port()
    conf = WORK / f"{name}.conf"
    conf.write_text(f"""
LOADER = 'thumbor.loaders.http_loader'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ENGINE = 'thumbor.engines.pil'
QUALITY = {JPEG_QUALITY}
PROGRESSIVE_JPEG = False
RESPECT_ORIENTATION = True
ALLOW_UNSAFE_URL = True
ENGINE_THREADPOOL_SIZE = {threadpool}
HTTP_LOADER_VALIDATE_CERTS = False
HTTP_LOADER_CURL_ASYNC_HTTP_CLIENT = {curl}
""")
    thumbor = Path(sys.executable).with_name("thumbor")
    log = open(LOGS / f"{name}.log", "wb")
    proc = subprocess.Popen([str(thumbor), "-p", str(port), "-i", HOST, "-c", str(conf), "-l", "warning",
                             "--processes", str(processes)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=WORK)
    procs.add(proc)
    wait_http(port, "/healthcheck", proc)
    return proc, port


def ours_path(key: str) -> str:
    return "/" + key.replace(".jpg", f"_{BOX}x{BOX}.jpg")


def thumbor_path(s3_port: int):
    return lambda key: f"/unsafe/fit-in/{BOX}x{BOX}/{HOST}:{s3_port}/{BUCKET}/{key}"


# ---------------------------------------------------------------- phases


@dataclass
class Server:
    name: str
    start: object  # () -> (proc, port)
    to_path: object  # key -> URL path
    proc: subprocess.Popen | None = None
    port: int = 0


def start_servers(procs: Procs, servers: list[Server], sources: "Sources", time_limit: float, log) -> None:
    for server in servers:
        server.proc, server.port = server.start()
    for server in servers:  # warm up: imports, boto3 clients, first renders, on keys used once
        keys = sources.fresh(4)
        run_level(server.port, [server.to_path(k) for k in keys], 2, "warmup", time_limit)
        sources.delete(keys)
    log("  started " + ", ".join(f"{s.name} (pid {s.proc.pid}, port {s.port})" for s in servers))


def run_interleaved(servers: list[Server], sources: "Sources", levels, segment: dict, time_limit: float, log):
    """For each (concurrency, count) level, run every server in turn, ``segment[c]`` fresh keys at a time.

    Rounds alternate the servers (in a rotating order) so that whatever else
    the machine is doing at the time hits every server alike.  Returns
    {server name: [summary per level]}.
    """
    out = {s.name: [] for s in servers}
    for concurrency, count in levels:
        seg = min(count, segment.get(concurrency, count))
        rounds = max(1, -(-count // seg))
        agg = {s.name: LevelResult(s.name, concurrency) for s in servers}
        level_deadline = min(time.perf_counter() + time_limit * len(servers), HTTP_DEADLINE[0])
        for r in range(rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for server in order:
                n = min(seg, count - agg[server.name].sent)
                if n <= 0 or time.perf_counter() > level_deadline:
                    continue
                keys = sources.fresh(n)
                tree = process_tree(server.proc.pid)
                c0 = (cpu_s(tree), cpu_s([sources.s3rver_pid]), client_cpu_s(), machine_busy_s())
                res = run_level(server.port, [server.to_path(k) for k in keys], concurrency, server.name,
                                min(time_limit, max(1.0, level_deadline - time.perf_counter())))
                c1 = (cpu_s(tree), cpu_s([sources.s3rver_pid]), client_cpu_s(), machine_busy_s())
                agg[server.name].absorb(res, [b - a for a, b in zip(c0, c1)], memory(server.proc.pid))
                sources.delete(keys)
        for server in servers:
            summary = agg[server.name].summary()
            out[server.name].append(summary)
            log(f"  {server.name:<48} c={concurrency}: {summary['ok']}/{summary['sent']} ok, "
                f"{summary['throughput']:.2f} req/s, p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms, "
                f"errors {summary['errors']}, RSS {summary['rss_total_mb']:.0f} MB")
    return out


def measure_put(client, size: int, n: int = 15) -> dict:
    body = os.urandom(size)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        client.put_object(Bucket=BUCKET, Key=f"bench/put-probe-{i}_200x200.jpg", Body=body, ContentType="image/jpeg",
                          CacheControl="public, max-age=31536000, immutable", StorageClass="REDUCED_REDUNDANCY",
                          Metadata={"derived-from": "bench/put-probe.jpg", "source-etag": "x" * 32,
                                    "resize": "200x200:fit"})
        times.append((time.perf_counter() - t0) * 1000)
    return {"size": size, "median_ms": median(times), "p90_ms": percentile(times, 90), "n": n}


def measure_fetch(s3_port: int, n: int = 15) -> dict:
    """The fetch leg alone: the package's S3Storage.get vs one boto3 read() vs a raw HTTP GET."""
    from resize_server.storage.s3 import S3Storage, make_client

    saved = {k: os.environ.get(k) for k in devstack.S3RVER_CREDENTIALS}
    os.environ.update(devstack.S3RVER_CREDENTIALS)  # make_client reads credentials from the environment
    try:
        storage = S3Storage(make_client(devstack.s3rver_settings(s3_port, BUCKET)), BUCKET)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    key = "bench/master.jpg"

    def raw():
        conn = http.client.HTTPConnection(HOST, s3_port, timeout=30)
        conn.request("GET", f"/{BUCKET}/{key}")
        conn.getresponse().read()
        conn.close()

    cases = {
        "package S3Storage.get (256 KiB chunks)_ms": lambda: storage.get(key, 30 * 1024 * 1024),
        "boto3 get_object + one read()_ms": lambda: storage.client.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
        "raw http.client GET_ms": raw,
    }
    samples = {name: [] for name in cases}
    for name, fn in cases.items():
        fn()
    for _ in range(n):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1000)
    return {name: median(v) for name, v in samples.items()}


def main(source_path: Path, out_json: Path, quick: bool = False, log=print):
    LOGS.mkdir(parents=True, exist_ok=True)
    nproc = len(os.sched_getaffinity(0))
    data = source_path.read_bytes()
    time_limit = 45.0
    if quick:
        levels = [(1, 8), (2, 10), (8, 24)]
        matrix_n, segment = 16, {1: 4, 2: 5, 8: 8}
    else:
        levels = [(1, 30), (2, 40), (8, 96)]
        matrix_n, segment = 72, {1: 10, 2: 10, 8: 24}
    results = {"source_bytes": len(data), "box": BOX, "nproc": nproc, "levels": levels}
    procs = Procs()
    data_dir = Path(tempfile.mkdtemp(prefix="resize-bench-s3-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    t_start = time.perf_counter()
    HTTP_DEADLINE[0] = t_start + HTTP_BUDGET_S
    try:
        s3_port = devstack.free_port()
        s3rver = procs.add(devstack.start_s3rver(s3_port, data_dir, log_file=open(LOGS / "s3rver.log", "wb")))
        client = devstack.s3rver_client(s3_port)
        devstack.prepare_bucket(client, BUCKET, f"{HOST}:1")
        sources = Sources(client, data, s3rver.pid)
        results["fetch"] = measure_fetch(s3_port)
        log("  GET of the 12 MP source from s3rver: " + ", ".join(
            f"{k.removesuffix('_ms')} {v:.1f} ms" for k, v in results["fetch"].items()))
        results["s3rver_data"] = str(data_dir)

        # 1. Our server (stock configuration) vs thumbor, interleaved.
        log(f"HTTP: resize-server (stock gunicorn_conf) vs thumbor, {len(data) / 1e6:.1f} MB 12 MP source -> {BOX}, "
            "interleaved segments")
        main_servers = [
            Server("resize-server (stock)", lambda: start_ours(procs, s3_port, {}, [], "ours-stock"), ours_path),
            Server(f"thumbor ({nproc} processes)",
                   lambda: start_thumbor(procs, s3_port, nproc, 0, "thumbor"), thumbor_path(s3_port)),
            Server(f"thumbor ({nproc} processes, ENGINE_THREADPOOL_SIZE=4)",
                   lambda: start_thumbor(procs, s3_port, nproc, 4, "thumbor-tuned"), thumbor_path(s3_port)),
        ]
        start_servers(procs, main_servers, sources, time_limit, log)
        by_name = run_interleaved(main_servers, sources, levels, segment, time_limit, log)
        results["ours"], results["thumbor"], results["thumbor_tuned"] = (by_name[s.name] for s in main_servers)
        for server in main_servers:
            procs.stop(server.proc)

        size = int(results["ours"][0]["bytes_median"])
        results["put"] = measure_put(client, size)
        log(f"  separate PUT of {size} bytes to s3rver: median {results['put']['median_ms']:.1f} ms")

        # 1b. The same server with every S3 PUT held 250 ms by a proxy: the client must not wait for it.
        proxy = DelayPutProxy(s3_port, 0.25)
        try:
            results["put_delayed"] = measure_put(devstack.s3rver_client(proxy.port), size, n=3)
            slow = Server("resize-server, every S3 PUT +250 ms", lambda: start_ours(
                procs, s3_port, {"RESIZE_S3_ENDPOINT_URL": f"http://{HOST}:{proxy.port}"}, [], "ours-slow-put"),
                ours_path)
            start_servers(procs, [slow], sources, time_limit, log)
            slow_res = run_interleaved([slow], sources, [(1, 6 if quick else 16)], {}, time_limit, log)
            procs.stop(slow.proc)  # drains its store queue through the proxy
            results["slow_put"] = {**slow_res[slow.name][0], "proxy_puts": proxy.puts}
            log(f"  PUT through the delaying proxy: median {results['put_delayed']['median_ms']:.0f} ms; "
                f"{proxy.puts} PUTs were delayed")
        finally:
            proxy.close()

        # 2. Worker models at concurrency 8, all servers up at once and interleaved.
        log("HTTP: worker models at concurrency 8, interleaved segments")
        sync = ["--worker-class", "sync", "--threads", "1"]
        matrix = [
            (f"stock ({_stock_label()})", {}, []),
            ("gthread, 1 worker, 1 render slot", {"RESIZE_WORKERS": "1", "RESIZE_RENDER_CONCURRENCY": "1"}, []),
            ("gthread, 2 workers, 1 render slot each", {"RESIZE_WORKERS": "2", "RESIZE_RENDER_CONCURRENCY": "1"}, []),
            ("gthread, 1 worker, 2 render slots", {"RESIZE_WORKERS": "1", "RESIZE_RENDER_CONCURRENCY": "2"}, []),
            ("gthread, 2 workers, 3 render slots each", {"RESIZE_WORKERS": "2", "RESIZE_RENDER_CONCURRENCY": "3"}, []),
            ("stock + --keep-alive 0", {}, ["--keep-alive", "0"]),
            ("sync, 1 worker", {"RESIZE_WORKERS": "1"}, sync),
            ("sync, 2 workers", {"RESIZE_WORKERS": "2"}, sync),
            ("sync, 3 workers", {"RESIZE_WORKERS": "3"}, sync),
            (f"stock, MAGICK_THREAD_LIMIT={nproc} (= unset)", {"MAGICK_THREAD_LIMIT": str(nproc)}, []),
        ]
        matrix_servers = [
            Server(label, lambda env=env, extra=extra, i=i: start_ours(procs, s3_port, env, extra, f"ours-matrix-{i}"),
                   ours_path) for i, (label, env, extra) in enumerate(matrix)]
        start_servers(procs, matrix_servers, sources, time_limit, log)
        by_name = run_interleaved(matrix_servers, sources, [(8, matrix_n)], {8: 24 if not quick else 8}, time_limit, log)
        results["matrix"] = [{"label": label, "env": env, "args": extra, **by_name[label][0]}
                             for label, env, extra in matrix]
        for server in matrix_servers:
            procs.stop(server.proc)
        results["worker_class_seen"] = _worker_classes()
    finally:
        procs.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - t_start
    out_json.write_text(json.dumps(results, indent=1))
    return results


def _stock_label() -> str:
    """What the stock configuration is on this machine (gunicorn_conf.py reads these Settings)."""
    from resize_server.config import Settings

    s = Settings.from_env()
    return (f"gthread, {s.gunicorn_workers} worker{'s' if s.gunicorn_workers != 1 else ''} x "
            f"{s.gunicorn_threads} threads, {s.render_concurrency} render slots")


def _worker_classes() -> dict:
    """What gunicorn said it used, from each log (e.g. 'Using worker: sync')."""
    seen = {}
    for path in sorted(LOGS.glob("ours-*.log")):
        match = re.search(r"Using worker: (\S+)", path.read_text(errors="replace"))
        seen[path.stem] = match.group(1) if match else None
    return seen


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    main(Path(a.source), Path(a.json), a.quick)

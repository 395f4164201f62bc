"""The local stack behind ``make run``, and the process helpers the end-to-end tests use.

s3rver plays S3 (API and website endpoint, with RoutingRules) on loopback,
gunicorn runs the resize server on a unix socket, and nginx (``deploy/nginx.conf``)
fronts it twice: the resize server's port (where the website's 302 points) and
the image domain (the bucket first, the resize server on a miss).  This is the
production topology of one instance, on loopback.

Every process started here is a session leader (so stopping it by PID reaches
its workers too), is stopped by PID on exit, and gets SIGTERM from the kernel
if this process dies, even by SIGKILL (``PR_SET_PDEATHSIG``), so nothing is left
orphaned holding a port.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Settings
from .errors import ResizeError
from .storage.s3 import S3Storage, make_client
from .website import bucket_policy, read_deploy_file, website_configuration

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
DEPLOY = ROOT / "deploy"
S3RVER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}
WEBSITE_SUFFIX = "s3-website.localhost"
NGINX = "/usr/sbin/nginx"
# The ports `make run` listens on, by the variable that sets each, with its default.
STACK_PORTS = {"S3_PORT": 4568, "RESIZE_PORT": 8080, "NGINX_PORT": 8081}


# ---------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1
try:  # looked up before any fork: the child only calls it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent(parent: int):
    """A preexec_fn: the child gets SIGTERM when its parent dies, however the parent dies.

    SIGTERM, not SIGKILL, so each child stops its own workers (nginx and
    gunicorn masters do; their workers would otherwise outlive a killed master).
    """
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def spawn(args: list[str], *, log_file=None, **kwargs) -> subprocess.Popen:
    """Start a child in its own session that dies with this process; stop it with ``stop()``.

    The kernel ties PR_SET_PDEATHSIG to the *thread* that forked: call this from a
    thread that lives as long as the child should (the main thread, a fixture).
    """
    stdout = log_file if log_file is not None else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent(os.getpid()), **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True when something listens on 127.0.0.1:port (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _can_connect(address) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect(address)
        except OSError:
            return False
    return True


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    _wait_for(("127.0.0.1", port), f"127.0.0.1:{port}", proc, timeout)


def wait_for_socket(path: str | Path, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    _wait_for(str(path), str(path), proc, timeout)


def _wait_for(address, name: str, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{Path(proc.args[0]).name} exited with {proc.returncode} before listening on {name}")
        if _can_connect(address):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {name} after {timeout}s")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process (its group, so workers go too), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


# ---------------------------------------------------------------- s3rver

def s3rver_command(port: int, directory: Path) -> list[str]:
    script = ROOT / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `npm ci` (make does it)")
    return [shutil.which("node") or "node", str(script), "-d", str(directory), "-a", "127.0.0.1",
            "-p", str(port), "--service-endpoint", "localhost", "--silent"]


def start_s3rver(port: int, directory: Path, log_file=None) -> subprocess.Popen:
    proc = spawn(s3rver_command(port, directory), log_file=log_file)
    wait_for_port(port, proc)
    return proc


def s3rver_settings(port: int, bucket: str = "images") -> Settings:
    return Settings(bucket=bucket, s3_endpoint_url=f"http://127.0.0.1:{port}")


def s3rver_client(port: int):
    """A boto3 client for s3rver (its fixed credentials are passed explicitly, not read from the environment)."""
    return make_client(s3rver_settings(port), credentials={
        "aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER"})


def prepare_bucket(client, bucket: str, resize_host: str) -> list[str]:
    """Create the bucket with its website configuration and public-read policy; returns notes to print."""
    storage = S3Storage(client, bucket)
    storage.create_bucket()
    return storage.configure_website(
        website_configuration(read_deploy_file("routing_rules.xml"), resize_host),
        bucket_policy(read_deploy_file("bucket_policy.json"), bucket))


def sample_images() -> dict[str, tuple[bytes, str]]:
    """The objects ``make run`` uploads under ``samples/``."""
    from wand.color import Color
    from wand.image import Image

    landscape = (SAMPLES / "landscape.jpg").read_bytes()
    with Image(blob=landscape) as img:
        img.resize(4500, 3000)  # 13.5 MP, the size of a phone photo
        # Wand's attenuate argument only reaches ImageMagick 7; on 6 the artifact does it.
        img.artifacts["attenuate"] = "0.25"
        img.noise("gaussian")
        img.compression_quality = 90
        earth = img.make_blob("jpeg")
    with Image(width=800, height=600, background=Color("transparent")) as img:
        with Image(width=400, height=600, background=Color("#2a6fdbc0")) as half:
            img.composite(half, 0, 0)  # left half translucent blue, right half transparent
        img.format = "png"
        logo = img.make_blob()
    return {
        "samples/earth.jpg": (earth, "image/jpeg"),
        "samples/portrait.jpg": ((SAMPLES / "portrait-exif6.jpg").read_bytes(), "image/jpeg"),
        "samples/logo.png": (logo, "image/png"),
    }


def upload_samples(client, bucket: str) -> list[str]:
    keys = []
    for key, (data, content_type) in sample_images().items():
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        keys.append(key)
    return keys


# ---------------------------------------------------------------- gunicorn

def gunicorn_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "python:resize_server.gunicorn_conf", *extra, "wsgi:app"]


def start_gunicorn(port: int | None, env: dict[str, str], log_file=None, *,
                   socket_path: str | Path | None = None) -> subprocess.Popen:
    """gunicorn on 127.0.0.1:port, or on the unix socket ``socket_path`` (the production topology)."""
    bind = f"unix:{socket_path}" if socket_path is not None else f"127.0.0.1:{port}"
    full_env = {**os.environ, **env, "RESIZE_BIND": bind}
    proc = spawn(gunicorn_command(), log_file=log_file if log_file is not None else sys.stderr,
                 cwd=ROOT, env=full_env)
    if socket_path is not None:
        wait_for_socket(socket_path, proc, timeout=30)
    else:
        wait_for_port(port, proc, timeout=30)
    return proc


# What `make run` turns on unless the environment says otherwise: a few presets to try, and
# POST /transform with a fixed local key (it is off without keys).
LOCAL_DEFAULTS = {
    "RESIZE_PRESETS": "thumb=50x50,small=200x200,cover=1200x630:fill,bw=200x200,grayscale",
    "RESIZE_API_KEYS": "local-dev-key",
}


def server_env(s3_port: int, bucket: str = "images") -> dict[str, str]:
    return {
        "RESIZE_BUCKET": bucket,
        "RESIZE_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "RESIZE_REGION": "us-east-1",
        **S3RVER_CREDENTIALS,
    }


# ---------------------------------------------------------------- nginx

# The variables deploy/nginx.conf documents; only these are substituted (nginx's own $vars stay).
NGINX_VARIABLES = ("RESIZE_NGINX_RUN_DIR", "RESIZE_NGINX_ERROR_LOG", "RESIZE_NGINX_WORKERS",
                   "RESIZE_NGINX_LISTEN", "RESIZE_NGINX_IMAGE_LISTEN", "RESIZE_NGINX_UPSTREAM",
                   "RESIZE_NGINX_S3_ORIGIN", "RESIZE_NGINX_S3_HOST", "RESIZE_NGINX_BUCKET", "RESIZE_NGINX_STATIC_DIR")
NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render_template(text: str, values: dict[str, str], names=NGINX_VARIABLES) -> str:
    """What ``envsubst '${A} ${B} ...'`` does with the listed names: ``${A}`` and ``$A`` replaced."""
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    pattern = re.compile(r"\$(?:\{(%s)\}|(%s)(?![A-Za-z0-9_]))" % ("|".join(names), "|".join(names)))
    return pattern.sub(lambda m: values[m.group(1) or m.group(2)], text)


def nginx_values(run_dir: Path, *, listen: str, image_listen: str, upstream: str, s3_origin: str,
                 bucket: str, workers: str = "1", s3_host: str = "s3.localhost") -> dict[str, str]:
    """Values for deploy/nginx.conf with everything nginx writes (pid, logs, temp files) in ``run_dir``."""
    return {
        "RESIZE_NGINX_RUN_DIR": str(run_dir),
        "RESIZE_NGINX_ERROR_LOG": str(run_dir / "error.log"),
        "RESIZE_NGINX_WORKERS": workers,
        "RESIZE_NGINX_LISTEN": listen,
        "RESIZE_NGINX_IMAGE_LISTEN": image_listen,
        "RESIZE_NGINX_UPSTREAM": upstream,
        "RESIZE_NGINX_S3_ORIGIN": s3_origin,
        # s3rver answers as the S3 API (not as the website) to s3.<its --service-endpoint>.
        "RESIZE_NGINX_S3_HOST": s3_host,
        "RESIZE_NGINX_BUCKET": bucket,
        # A copy in the run folder: nginx's workers (nobody, when started as root) may not be able to
        # read a checkout under /root or a 0700 temporary folder.
        "RESIZE_NGINX_STATIC_DIR": str(run_dir / "static"),
    }


def nginx_command(conf_text: str, run_dir: Path) -> list[str]:
    """Write the configuration into ``run_dir`` (with its temp folders), check it, return the command."""
    if not Path(NGINX).exists():
        raise FileNotFoundError(f"{NGINX} is missing: install Debian's nginx package (make does it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in NGINX_TEMP_DIRS:
        (run_dir / name).mkdir(exist_ok=True)
    static = run_dir / "static"
    static.mkdir(exist_ok=True)
    shutil.copyfile(DEPLOY / "placeholder.png", static / "placeholder.png")
    (static / "placeholder.png").chmod(0o644)
    conf = run_dir / "nginx.conf"
    conf.write_text(conf_text)
    args = [NGINX, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "error.log")]
    check = subprocess.run([*args, "-t", "-q"], capture_output=True, text=True, timeout=20)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
    return args


def start_nginx(conf_text: str, run_dir: Path, ports: list[int], log_file=None) -> subprocess.Popen:
    """nginx with its own prefix, pid, error log and temp folders in ``run_dir``; stop it with ``stop()``.

    The configuration must say ``daemon off;`` (deploy/nginx.conf does) so the
    process started here is the master and stopping it by PID stops its workers.
    """
    proc = spawn(nginx_command(conf_text, run_dir), log_file=log_file)
    for port in ports:
        wait_for_port(port, proc)
    return proc


def stack_nginx_conf(run_dir: Path, *, resize_port: int, image_port: int, socket_path: Path, s3_port: int,
                     bucket: str, workers: str = "1") -> str:
    values = nginx_values(run_dir, listen=f"127.0.0.1:{resize_port}", image_listen=f"127.0.0.1:{image_port}",
                          upstream=f"unix:{socket_path}", s3_origin=f"http://127.0.0.1:{s3_port}", bucket=bucket,
                          workers=workers)
    return render_template((DEPLOY / "nginx.conf").read_text(), values)


# ---------------------------------------------------------------- make run

class _Stopping(Exception):
    """Raised out of the start-up or the wait loop by the first stop signal."""


def stack_ports(environ=None) -> dict[str, int] | str:
    """The ports from S3_PORT / RESIZE_PORT / NGINX_PORT, or a one-line problem naming the variable."""
    environ = os.environ if environ is None else environ
    ports: dict[str, int] = {}
    for name, default in STACK_PORTS.items():
        raw = environ.get(name, "") or str(default)
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            return f"{name}={raw} is not a port number (1-65535)"
        ports[name] = int(raw)
    for name, port in ports.items():
        others = [other for other, p in ports.items() if p == port and other != name]
        if others:
            return f"{name} and {others[0]} are both {port}: give each its own port"
    for name, port in ports.items():
        if port_in_use(port):
            taken = set(ports.values())
            spare = next((p for p in range(port + 1, min(port + 200, 65536))
                          if p not in taken and not port_in_use(p)), None)
            hint = f" (e.g. `make run {name}={spare}`)" if spare else ""
            return f"port {port} is in use: set {name}=<another port> to pick another{hint}"
    return ports


def banner(*, s3_port: int, resize_port: int, nginx_port: int, bucket: str) -> str:
    host = f"{bucket}.{WEBSITE_SUFFIX}:{s3_port}"
    env = " ".join(f"{k}={v}" for k, v in cli_env(s3_port, bucket).items())
    return f"""
The local stack is up:
  s3rver (S3 API + website endpoint)  http://127.0.0.1:{s3_port}
  resize server (nginx -> gunicorn)   http://127.0.0.1:{resize_port}
  image domain (nginx: bucket, then the resize server on a miss)  http://127.0.0.1:{nginx_port}

Through the S3 website endpoint (the first request is redirected to the resize server, the second is served by S3):

  curl -sSL --resolve {host}:127.0.0.1 -o out.jpg -w '%{{http_code}} %{{num_redirects}} redirect(s) %{{size_download}} bytes\\n' http://{host}/samples/earth_200x200.jpg
  curl -sS  --resolve {host}:127.0.0.1 -o /dev/null -w '%{{http_code}} (no redirect)\\n' http://{host}/samples/earth_200x200.jpg
  curl -sSL --resolve {host}:127.0.0.1 -o portrait.jpg http://{host}/samples/portrait_x200.jpg
  curl -sSL --resolve {host}:127.0.0.1 -o logo.png http://{host}/samples/logo_200x200_fill.png

Through the nginx front for the image domain (no redirect; a miss is rendered, then served from the bucket):

  curl -sS -o front.jpg -w '%{{http_code}} %{{content_type}} %{{size_download}} bytes\\n' http://127.0.0.1:{nginx_port}/samples/earth_100x100.jpg
  curl -sS -o small.jpg http://127.0.0.1:{nginx_port}/p/small/samples/earth.jpg     (a preset, path form)

The resize server directly:

  curl -sS -o direct.jpg http://127.0.0.1:{resize_port}/resize.php?src=samples/earth_400x400.jpg
  curl -sS -o bw.jpg 'http://127.0.0.1:{resize_port}/resize.php?src=samples/earth.jpg!bw'     (a preset, style suffix)

The transform API (POST an image, get it back transformed; the local key is {LOCAL_DEFAULTS["RESIZE_API_KEYS"]}):

  curl -sS -X POST --data-binary @out.jpg -H 'Authorization: Bearer {LOCAL_DEFAULTS["RESIZE_API_KEYS"]}' -o gray.jpg 'http://127.0.0.1:{resize_port}/transform?grayscale=1&w=150'

The CLI against this stack:

  export {env}
  .venv/bin/resize-server render samples/earth_50x50.jpg samples/earth_thumb.jpg
  .venv/bin/resize-server doctor --host 127.0.0.1:{resize_port}

Ctrl-C (or SIGTERM/SIGHUP) stops everything."""


def cli_env(s3_port: int, bucket: str = "images") -> dict[str, str]:
    """The environment that points ``resize-server`` (the CLI) at the local stack."""
    return {
        "RESIZE_BUCKET": bucket,
        "RESIZE_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        **S3RVER_CREDENTIALS,
        "MAGICK_CONFIGURE_PATH": str(DEPLOY),
        "RESIZE_PRESETS": os.environ.get("RESIZE_PRESETS", LOCAL_DEFAULTS["RESIZE_PRESETS"]),
    }


RUN_DIR_PREFIX = "resize-stack-"


def _remove_stale_run_dirs() -> None:
    """Remove the folders of earlier stacks whose process is gone (a SIGKILLed one cannot clean up)."""
    for run_dir in Path(tempfile.gettempdir()).glob(RUN_DIR_PREFIX + "*"):
        try:
            owner = int((run_dir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        try:
            os.kill(owner, 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(run_dir, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process


def _say(text: str, *, err: bool = False) -> None:
    """Print, ignoring a closed terminal or pipe (SIGHUP): stopping must not fail on a print."""
    try:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


def main() -> int:
    ports = stack_ports()
    if isinstance(ports, str):
        _say(f"make run: {ports}", err=True)
        return 2
    s3_port, resize_port, nginx_port = ports["S3_PORT"], ports["RESIZE_PORT"], ports["NGINX_PORT"]
    bucket = "images"
    _remove_stale_run_dirs()
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (run_dir / "owner.pid").write_text(str(os.getpid()))
    run_dir.chmod(0o755)  # nginx's workers (`nobody` when started as root) reach the gunicorn socket in it
    procs: list[subprocess.Popen] = []
    state = {"stopping": False, "starting": False, "pending": None}

    def on_signal(signum, _frame):
        if state["stopping"]:
            _say(f"({signal.Signals(signum).name}: already stopping)", err=True)
            return
        if state["starting"]:  # a child is being forked: stop right after it is recorded
            state["pending"] = signum
            return
        state["stopping"] = True
        raise _Stopping(signum)

    def start(args: list[str], **kwargs) -> subprocess.Popen:
        # No signal may land between a child's fork and its entry in `procs`, or it would be missed.
        state["starting"] = True
        try:
            proc = spawn(args, **kwargs)
            procs.append(proc)
        finally:
            state["starting"] = False
        if state["pending"] is not None:
            state["stopping"] = True
            raise _Stopping(state["pending"])
        return proc

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        data_dir = run_dir / "s3rver"
        data_dir.mkdir()
        _say(f"starting s3rver on 127.0.0.1:{s3_port} (data in {data_dir})")
        s3rver = start(s3rver_command(s3_port, data_dir))
        wait_for_port(s3_port, s3rver)
        client = s3rver_client(s3_port)
        for note in prepare_bucket(client, bucket, f"127.0.0.1:{resize_port}"):
            _say(f"note: {note}")
        _say(f"uploaded {', '.join(upload_samples(client, bucket))}")

        socket_path = run_dir / "gunicorn.sock"
        _say(f"starting the resize server (gunicorn) on unix:{socket_path}")
        env = {**LOCAL_DEFAULTS, **os.environ, **server_env(s3_port, bucket), "RESIZE_BIND": f"unix:{socket_path}",
               "MAGICK_CONFIGURE_PATH": str(DEPLOY), "RESIZE_GRACEFUL_TIMEOUT": "8"}
        gunicorn = start(gunicorn_command(), log_file=sys.stderr, cwd=ROOT, env=env)
        wait_for_socket(socket_path, gunicorn, timeout=30)

        _say(f"starting nginx on 127.0.0.1:{resize_port} (resize server) and 127.0.0.1:{nginx_port} (image domain)")
        nginx_dir = run_dir / "nginx"
        conf = stack_nginx_conf(nginx_dir, resize_port=resize_port, image_port=nginx_port, socket_path=socket_path,
                                s3_port=s3_port, bucket=bucket)
        nginx = start(nginx_command(conf, nginx_dir), log_file=sys.stderr)
        for port in (resize_port, nginx_port):
            wait_for_port(port, nginx)

        _say(banner(s3_port=s3_port, resize_port=resize_port, nginx_port=nginx_port, bucket=bucket))
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        dead = next(p for p in procs if p.poll() is not None)
        _say(f"{Path(dead.args[0]).name} exited with {dead.returncode}; stopping the stack", err=True)
        return 1
    except _Stopping as exc:
        _say(f"\n{signal.Signals(exc.args[0]).name}: stopping")
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        _say(f"make run: {exc}", err=True)
        return 1
    except ResizeError as exc:  # s3rver refused the bucket set-up or the uploads
        _say(f"make run: {exc.public}: {exc.detail}", err=True)
        return 1
    finally:
        state["stopping"] = True  # from here on a signal is only noted: nothing interrupts the stop
        for proc in reversed(procs):  # nginx, then gunicorn (it stores what is queued), then s3rver
            stop(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

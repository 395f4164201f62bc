"""Settings, read once from ``RESIZE_*`` environment variables and validated up front.

``Settings.from_env()`` raises ``ConfigError`` for values that do not parse,
``validate()`` for values that parse but are wrong; either way one error names
every bad variable (unparseable and invalid alike), so an operator fixes them
all in one go.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .limits import SourceLimits
from .presets import Catalog, Operations, Size, format_presets, parse_presets, parse_sizes

STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
)
DEFAULT_SIZES = "50x50,100x100,200x200,400x400,800x800,1024x1024,200x,x200"
PREFIX = "RESIZE_"
MIN_API_KEY_LENGTH = 12


class ConfigError(ValueError):
    pass


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Everything configurable.  Field name ``foo_bar`` is read from ``RESIZE_FOO_BAR``."""

    bucket: str = ""
    region: str = "us-east-1"
    s3_endpoint_url: str = ""
    source_prefixes: str = ""
    allowed_sizes: frozenset[Size] | None = field(default_factory=lambda: parse_sizes(DEFAULT_SIZES))
    max_width: int = 2048
    max_height: int = 2048
    upscale: bool = False
    # Named renderings, shared by every way in (see presets.py): thumb=50x50,cover=1200x630:fill
    presets: dict[str, Operations] = field(default_factory=dict)
    presets_only: bool = False
    style_separator: str = "!"
    source_extensions: str = "jpg,jpeg,png,webp"
    # Pre-generation (event worker, Lambda, backfill): which presets, and where they go.
    event_presets: str = ""
    dest_bucket: str = ""
    dest_key: str = "{stem}_{preset}.{ext}"
    # A truncated original still gets its partial thumbnail, but briefly cached and never stored.
    partial_cache_control: str = "public, max-age=60"
    # POST /transform
    max_upload_bytes: int = 20 * 1024 * 1024
    api_keys: str = ""
    transform_public: bool = False
    jpeg_quality: int = 85
    storage_class: str = "REDUCED_REDUNDANCY"
    cache_control: str = "public, max-age=31536000, immutable"
    store_results: bool = True
    s3_connect_timeout: float = 2.0
    s3_read_timeout: float = 10.0
    s3_max_attempts: int = 3
    max_source_bytes: int = 30 * 1024 * 1024
    max_source_pixels: int = 50_000_000
    magick_memory_mb: int = 1024
    render_concurrency: int = field(default_factory=_cpu_count)
    queue_size: int = 16
    queue_timeout: float = 10.0
    store_queue_size: int = 64
    store_queue_mb: int = 64
    redis_url: str = ""
    redis_lock_ms: int = 30_000
    redis_wait: float = 10.0
    log_level: str = "INFO"
    # Pre-generation worker (resize-server worker) and the Lambda entry point.
    worker_concurrency: int = field(default_factory=_cpu_count)  # messages worked on at once
    worker_visibility_timeout: int = 120  # seconds a received message stays hidden (extended while worked on)
    worker_wait_seconds: int = 20  # SQS long poll
    sqs_endpoint_url: str = ""
    website_url: str = ""  # the bucket's website endpoint, for Lambda's 302 past API Gateway's 6 MB limit
    # Fail fast and bounded: HeadBucket before serving, and /readyz within a deadline (one attempt).
    startup_check: bool = True
    ready_timeout: float = 3.0
    # gunicorn's (read by gunicorn_conf.py through Settings, validated with the rest).
    bind: str = "127.0.0.1:8080"
    workers: int | None = None  # default: 1 (one process owns every render slot; see gunicorn_conf.py)
    threads: int | None = None  # default: render slots + waiting room + 8
    graceful_timeout: int = 30  # SIGTERM -> exit, in-flight requests and the store drain included
    # host[:port] clients are redirected to (the load balancer): `resize-server doctor` checks the RoutingRules.
    public_host: str = ""

    # ---- derived views -------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """What may be rendered: the named presets and the allowed sizes, as one policy."""
        return Catalog(self.presets, self.allowed_sizes, self.max_width, self.max_height, self.presets_only)

    @property
    def source_extension_list(self) -> tuple[str, ...]:
        return tuple(e.strip().lstrip(".") for e in self.source_extensions.split(",") if e.strip())

    @property
    def event_preset_names(self) -> tuple[str, ...]:
        """The presets rendered on upload: RESIZE_EVENT_PRESETS, or every preset."""
        names = tuple(n.strip() for n in self.event_presets.split(",") if n.strip())
        return names or tuple(self.presets)

    @property
    def api_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Key prefixes the server may read sources from; empty means the whole bucket."""
        return tuple(p.strip() for p in self.source_prefixes.split(",") if p.strip())

    @property
    def source_limits(self) -> SourceLimits:
        return SourceLimits(self.max_source_bytes, self.max_source_pixels)

    @property
    def gunicorn_workers(self) -> int:
        # One process: one render gate, so the capacity holds however the kernel spreads connections.
        return self.workers if self.workers is not None else 1

    @property
    def gunicorn_threads(self) -> int:
        # Enough threads for the render slots, the waiting room and the requests that never render.
        return self.threads if self.threads is not None else self.render_concurrency + self.queue_size + 8

    # ---- display, in the user's own terms ---------------------------------

    def display(self, name: str) -> str:
        """A setting's value as the user would write it in ``RESIZE_<NAME>=`` (sizes as ``200x200,x200`` or ``*``)."""
        value = getattr(self, name)
        if name == "allowed_sizes":
            return _sizes(value)
        if name == "presets":
            return format_presets(value)
        if name == "workers":
            return str(self.gunicorn_workers)
        if name == "threads":
            return str(self.gunicorn_threads)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        return "" if value is None else str(value)

    def environment(self, *, reveal_secrets: bool = False) -> list[tuple[str, str]]:
        """Every setting as (``RESIZE_NAME``, value as the user would write it), sorted by name.

        API keys and a password in RESIZE_REDIS_URL are hidden unless
        ``reveal_secrets``: check-config output ends up in tickets and chat.
        """
        shown = []
        for f in fields(self):
            value = self.display(f.name)
            if not reveal_secrets and value:
                if f.name == "api_keys":
                    value = f"<{len(self.api_key_list)} key(s) hidden>"
                elif f.name == "redis_url":
                    value = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", value)
            shown.append((PREFIX + f.name.upper(), value))
        return sorted(shown)

    # ---- construction ----------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = PREFIX) -> "Settings":
        """Read settings from ``<prefix><FIELD>`` variables (unset ones keep their defaults)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = prefix + f.name.upper()
            if name in environ:
                values[f.name] = environ[name]
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Settings":
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        converted: dict[str, Any] = {}
        problems = []
        for name, raw in values.items():
            try:
                converted[name] = _convert(name, raw, cls.__dataclass_fields__[name].type)
            except ValueError as exc:
                problems.append(f"{PREFIX}{name.upper()}={raw!r}: {exc}")
        settings = replace(cls(), **converted)
        # Which variables the user set, so a conflict is blamed on the one they wrote (see problems()).
        object.__setattr__(settings, "_explicit", frozenset(values))
        if problems:
            # Name the values that parsed but are wrong too, not only the first kind of problem.
            problems += settings.problems()
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return settings

    def validate(self) -> "Settings":
        problems = self.problems()
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return self

    def problems(self) -> list[str]:
        """Every invalid setting, each as ``RESIZE_NAME=value: what is wrong`` (the value as the user writes it)."""
        problems = []
        # Settings built in code (not from the environment) count every field as set.
        explicit = getattr(self, "_explicit", None)

        def was_set(name: str) -> bool:
            return explicit is None or name in explicit

        def bad(name: str, message: str) -> None:
            problems.append(f"{PREFIX}{name.upper()}={shlex.quote(self.display(name))}: {message}")

        if not self.bucket:
            bad("bucket", "is required (the bucket holding originals and derived images)")
        if self.storage_class not in STORAGE_CLASSES:
            bad("storage_class", f"must be one of {', '.join(STORAGE_CLASSES)}")
        if not 1 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", "must be between 1 and 100")
        for name in ("max_width", "max_height", "max_source_bytes", "max_source_pixels", "magick_memory_mb",
                     "render_concurrency", "store_queue_size", "store_queue_mb", "s3_max_attempts",
                     "redis_lock_ms"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("workers", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.graceful_timeout < 2:
            bad("graceful_timeout", "must be at least 2 seconds (half of it is kept for storing queued images)")
        if self.queue_size < 0:
            bad("queue_size", "must be 0 or more")
        for name in ("s3_connect_timeout", "s3_read_timeout", "queue_timeout", "redis_wait", "ready_timeout"):
            if getattr(self, name) <= 0:
                bad(name, "must be a positive number of seconds")
        if self.s3_endpoint_url and not self.s3_endpoint_url.startswith(("http://", "https://")):
            bad("s3_endpoint_url", "must start with http:// or https://")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            bad("redis_url", "must start with redis://, rediss:// or unix://")
        if any(p.startswith("/") for p in self.prefixes):
            # "/samples" is meant as the folder: suggest "samples/" (a bare "samples" would match "samples2/" too).
            fixed = ",".join(p.strip("/") + "/" if p.startswith("/") else p for p in self.prefixes)
            bad("source_prefixes", f"no S3 key starts with '/': write {fixed}")
        problems += self._size_problems(was_set)
        bind_problem = _bind_problem(self.bind)
        if bind_problem:
            bad("bind", bind_problem)
        if self.worker_concurrency < 1:
            bad("worker_concurrency", "must be at least 1")
        if not 1 <= self.worker_visibility_timeout <= 43200:
            bad("worker_visibility_timeout", "must be between 1 and 43200 seconds (SQS's limits)")
        if not 0 <= self.worker_wait_seconds <= 20:
            bad("worker_wait_seconds", "must be between 0 and 20 seconds (SQS's limits)")
        for name in ("sqs_endpoint_url", "website_url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                bad(name, "must start with http:// or https://")
        if self.public_host and not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", self.public_host):
            bad("public_host", "must be host or host:port, without scheme or path")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            bad("log_level", "must be DEBUG, INFO, WARNING or ERROR")
        problems += self._rendering_problems()
        return problems

    def _dest_extension_problem(self) -> str | None:
        """The stored key's extension must name the format stored under it (what the on-demand path does).

        ``{ext}`` is always right (the preset's format, else the original's); ``{key}``
        keeps the original's extension, wrong for a preset that converts; a literal
        extension is right only if every event preset converts to that format.
        """
        from .options import FORMAT_BY_EXTENSION

        tail = self.dest_key.rsplit("/", 1)[-1]
        converting = [n for n in self.event_preset_names if n in self.presets and self.presets[n].format]
        if tail.endswith("{ext}"):
            return None
        if tail.endswith("{key}"):
            if converting:
                return (f"ends with {{key}}, so outputs keep the original's extension, but preset {converting[0]} "
                        f"converts to {self.presets[converting[0]].format}: end the key with .{{ext}}")
            return None
        literal = tail.rpartition(".")[2].lower() if "." in tail else ""
        fmt = FORMAT_BY_EXTENSION.get(literal)
        wrong = [n for n in self.event_preset_names if n in self.presets and self.presets[n].format != fmt]
        if fmt is None or wrong:
            return (f"ends with a fixed extension ({literal or 'none'}), but preset {(wrong or self.event_preset_names)[0]}"
                    " does not always write that format (an original's format is kept unless the preset sets "
                    "format=): end the key with .{ext}")
        return None

    def _rendering_problems(self) -> list[str]:
        """Presets, pre-generation and transform settings."""
        from .options import FORMAT_BY_EXTENSION

        problems = []

        def bad(name: str, message: str, shown: str | None = None) -> None:
            value = self.display(name) if shown is None else shown
            problems.append(f"{PREFIX}{name.upper()}={shlex.quote(value)}: {message}")

        presets_text = self.display("presets")
        for name, ops in self.presets.items():
            if (ops.width or 0) > self.max_width or (ops.height or 0) > self.max_height:
                bad("presets", f"preset {name} ({ops.size_label}) is larger than RESIZE_MAX_WIDTH/RESIZE_MAX_HEIGHT "
                    f"({self.max_width}x{self.max_height})", presets_text)
        if self.presets_only and not self.presets:
            bad("presets_only", "needs RESIZE_PRESETS (nothing could be served)")
        if self.style_separator and (len(self.style_separator) != 1 or self.style_separator.isalnum()
                                     or self.style_separator in "/_.-%"):
            bad("style_separator", "must be one character that is not a letter, digit, '/', '_', '.', '-' or '%' "
                "(or empty to turn style suffixes off)")
        unknown_ext = [e for e in self.source_extension_list if e.lower() not in FORMAT_BY_EXTENSION]
        if unknown_ext or not self.source_extension_list:
            bad("source_extensions", "must list image extensions such as jpg,jpeg,png,webp")
        missing = [n for n in self.event_preset_names if n not in self.presets]
        if missing:
            bad("event_presets", f"names presets that RESIZE_PRESETS does not define: {', '.join(missing)}")
        fields_ok = {"{key}", "{stem}", "{preset}", "{ext}", "{bucket}"}
        used = set(re.findall(r"\{[^{}]*\}", self.dest_key))
        if used - fields_ok or re.sub(r"\{[^{}]*\}", "", self.dest_key).count("{") \
                or re.sub(r"\{[^{}]*\}", "", self.dest_key).count("}"):
            bad("dest_key", "may only use {key}, {stem}, {preset}, {ext} and {bucket}")
        elif "{key}" not in used and "{stem}" not in used:
            bad("dest_key", "must contain {stem} or {key}, or every original would write the same key")
        elif "{preset}" not in used and len(self.event_preset_names) > 1:
            bad("dest_key", "must contain {preset} when more than one preset is rendered on upload "
                "(every preset would write the same key)")
        elif "{preset}" not in used and not self.dest_bucket:
            bad("dest_key", "without {preset}, the outputs would overwrite the originals: set RESIZE_DEST_BUCKET")
        else:
            extension_problem = self._dest_extension_problem()
            if extension_problem:
                bad("dest_key", extension_problem)
        if self.dest_bucket and "{" in self.dest_bucket.replace("{bucket}", ""):
            bad("dest_bucket", "may only use {bucket}")
        if self.max_upload_bytes < 1:
            bad("max_upload_bytes", "must be at least 1")
        if self.api_keys.strip() and not self.api_key_list:
            bad("api_keys", "holds no key (POST /transform would stay off): list keys separated by commas")
        short = [k for k in self.api_key_list if len(k) < MIN_API_KEY_LENGTH]
        if short:
            problems.append(f"{PREFIX}API_KEYS: {len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters; "
                            "use long random keys (python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
        return problems

    def _size_problems(self, was_set) -> list[str]:
        """Allowed sizes beyond the maxima, blamed on the variable the user set.

        With ``RESIZE_MAX_WIDTH=500`` alone the default sizes did not change:
        the new maximum is what conflicts with them.  When the user listed the
        sizes, the sizes are what they got wrong.
        """
        if self.allowed_sizes is None:
            return []
        problems = []
        for side, limit_name, index in (("wider", "max_width", 0), ("taller", "max_height", 1)):
            limit = getattr(self, limit_name)
            over = frozenset(s for s in self.allowed_sizes if (s[index] or 0) > limit)
            if not over:
                continue
            limit_var = f"{PREFIX}{limit_name.upper()}"
            if was_set("allowed_sizes") or not was_set(limit_name):
                problems.append(f"{PREFIX}ALLOWED_SIZES={shlex.quote(self.display('allowed_sizes'))}: "
                                f"{_sizes(over)} {'is' if len(over) == 1 else 'are'} {side} than "
                                f"{limit_var}={limit}")
            else:
                plural = "size" if len(over) == 1 else "sizes"
                problems.append(f"{limit_var}={limit}: is smaller than the allowed {plural} {_sizes(over)} "
                                f"(from the default RESIZE_ALLOWED_SIZES): raise it, or list the sizes you "
                                f"want in RESIZE_ALLOWED_SIZES")
        return problems


def _sizes(sizes: frozenset[Size] | None) -> str:
    """Sizes as the user writes them: ``200x200,400x,x200``, or ``*`` for any size."""
    if sizes is None:
        return "*"
    ordered = sorted(sizes, key=lambda s: (s[0] is None, s[1] is None, s[0] or 0, s[1] or 0))
    return ",".join(f"{w or ''}x{h or ''}" for w, h in ordered)


def _bind_problem(bind: str) -> str | None:
    """What is wrong with a gunicorn bind address, or None (``host:port``, ``[v6]:port``, ``unix:/path``, ``fd://N``)."""
    example = "host:port, [IPv6]:port or unix:/path/to.sock"
    if bind.startswith("unix:"):
        return None if bind[5:] else "needs a socket path: unix:/run/resize-server.sock"
    if bind.startswith("fd://"):
        return None if bind[5:].isdigit() else "fd:// needs a file descriptor number (fd://3)"
    if bind.endswith("]") or ":" not in bind:
        # gunicorn would silently bind port 8000 here.
        return f"needs a port: write {bind or '127.0.0.1'}:8080 ({example})"
    host, _, port = bind.rpartition(":")
    if not host:
        return f"needs a host: write 0.0.0.0:{port} (every interface) or 127.0.0.1:{port} (this machine only)"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"an IPv6 address needs brackets: [{host}]:{port}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"the port must be a number from 1 to 65535 ({example})"
    return None


def _convert(name: str, raw: Any, type_name: str) -> Any:
    if not isinstance(raw, str):
        return raw
    raw = raw.strip()
    if type_name == "bool":
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if type_name == "int | None":
        # Empty means "the default" (a value derived from other settings).
        type_name = "int" if raw else "None"
        if not raw:
            return None
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if type_name == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
    if name == "allowed_sizes":
        return parse_sizes(raw)
    if name == "presets":
        return parse_presets(raw)
    return raw

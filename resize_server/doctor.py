"""``resize-server doctor``: is this deployment wired the way the service needs?

Each check answers pass, FAIL (with the fix) or "not checked" (with why, e.g.
s3rver has no bucket policies); any failure makes the command exit 1.  Every
check only reads, except the write check, which stores a tiny probe image
under a derived key and deletes it again.  The S3 questions go through
``storage/s3.py`` and the ImageMagick ones through ``imaging/wand_engine.py``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from .config import ConfigError, Settings
from .errors import ResizeError, UpstreamAccessDenied

PASS, FAIL, SKIP = "pass", "FAIL", "not checked"
REDIRECT_PREFIX = "resize.php?src="
# Coders an image upload must never reach (ImageTragick and friends): vector and
# script formats, anything that fetches URLs or runs Ghostscript.
DANGEROUS_CODERS = ("MVG", "MSL", "EPHEMERAL", "TEXT", "URL", "HTTP", "HTTPS", "FTP", "PS", "EPS", "PDF", "XPS",
                    "SVG", "MSVG", "LABEL", "CAPTION")
NEEDED_CODERS = ("JPEG", "PNG", "GIF", "WEBP")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
# A 1x1 transparent PNG: what the write check stores.
PROBE_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")
SETUP_BUCKET = "resize-server setup-bucket --host {host}"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


class Doctor:
    def __init__(self, environ: Mapping[str, str] | None = None, *, host: str | None = None,
                 protocol: str | None = None, probe_source: str | None = None, queue_url: str | None = None,
                 client=None, sqs_client=None, policy_report: Callable[[tuple], dict] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.host = host
        self.protocol = protocol
        self.probe_source = probe_source
        self.queue_url = queue_url
        self.client = client  # injected in tests; else built from the settings like the server's
        self.sqs_client = sqs_client
        self._policy_report = policy_report
        self.checks: list[Check] = []
        self.settings: Settings | None = None

    def add(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        return check

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    # ---- the checks, in order --------------------------------------------

    def run(self) -> list[Check]:
        self.check_configuration()
        settings = self.settings
        if settings is not None and settings.bucket:
            if self.check_credentials_and_bucket():
                self.check_website()
                self.check_policy()
                self.check_read()
                self.check_write()
        else:
            for name in ("credentials", "bucket", "website", "redirect host", "bucket policy", "read a source",
                         "write a derived key"):
                self.add(name, SKIP, "not checked: the configuration names no bucket")
        self.check_imagemagick()
        self.check_redis()
        self.check_queue()
        return self.checks

    def check_configuration(self) -> None:
        try:
            settings = Settings.from_env(self.environ)
        except ConfigError as exc:
            self.add("configuration", FAIL, str(exc), "fix the RESIZE_* variables named above")
            return
        self.settings = settings
        self.host = self.host or settings.public_host or None
        problems = settings.problems()
        if problems:
            self.add("configuration", FAIL, "invalid configuration:\n" + "\n".join(problems),
                     "fix the RESIZE_* variables named above")
        else:
            where = settings.s3_endpoint_url or f"AWS region {settings.region}"
            self.add("configuration", PASS, f"RESIZE_* settings are valid (bucket {settings.bucket}, S3 {where})")

    def _s3(self):
        if self.client is None:
            from .storage.s3 import make_client

            self.client = make_client(self.settings)
        return self.client

    def check_credentials_and_bucket(self) -> bool:
        from .storage.s3 import S3Storage, credentials_info

        settings = self.settings
        info = credentials_info()
        if info is None and self.client is None:
            self.add("credentials", FAIL, "boto3 found no AWS credentials",
                     "attach an instance role (EC2), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
            self.add("bucket", SKIP, "not checked: no credentials")
            return False
        source = f"from {info[0]}, access key ...{info[1][-4:]}" if info else "given by the caller"
        try:
            S3Storage(self._s3(), settings.bucket).check()
        except UpstreamAccessDenied as exc:
            if any(code in exc.detail for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")):
                self.add("credentials", FAIL, f"S3 refused the credentials ({source}): {exc.detail}",
                         "use valid credentials for this account (or, for a local S3, its fixed keys)")
                self.add("bucket", SKIP, "not checked: the credentials were refused")
                return False
            self.add("credentials", PASS, f"{source}; S3 authenticated them")
            self.add("bucket", FAIL, f"bucket {settings.bucket}: access denied: {exc.detail}",
                     f"grant s3:ListBucket on arn:aws:s3:::{settings.bucket} (HeadBucket, /readyz need it)")
            return True
        except ResizeError as exc:
            if exc.public == "bucket not found":
                self.add("credentials", PASS, f"{source}; S3 authenticated them")
                self.add("bucket", FAIL, f"bucket {settings.bucket} does not exist",
                         "create it (deploy/cloudformation.yaml does) or fix RESIZE_BUCKET / RESIZE_REGION")
                return False
            self.add("credentials", SKIP, f"not checked ({source}): S3 did not answer")
            self.add("bucket", FAIL, f"S3 unreachable: {exc.detail}",
                     "check RESIZE_S3_ENDPOINT_URL / RESIZE_REGION and the network path to S3")
            return False
        self.add("credentials", PASS, f"{source}; S3 accepted them")
        self.add("bucket", PASS, f"bucket {settings.bucket} exists and answers HeadBucket")
        return True

    def _inspector(self):
        from .storage.s3 import BucketInspector

        return BucketInspector(self._s3(), self.settings.bucket)

    def check_website(self) -> None:
        from .storage.s3 import NotImplementedByServer

        bucket = self.settings.bucket
        fix = SETUP_BUCKET.format(host=self.host or "HOST")
        try:
            website = self._inspector().website()
        except ResizeError as exc:
            self.add("website", FAIL, f"could not read the website configuration: {exc.detail}",
                     f"grant s3:GetBucketWebsite on arn:aws:s3:::{bucket} to run this check")
            self.add("redirect host", SKIP, "not checked: no website configuration read")
            return
        except NotImplementedByServer as exc:
            self.add("website", SKIP, f"not checked: this S3 server does not implement website configuration ({exc})")
            self.add("redirect host", SKIP, "not checked: no website configuration read")
            return
        if website is None:
            self.add("website", FAIL, f"bucket {bucket} has no website configuration: missing thumbnails are "
                     "answered 404/403 instead of being redirected to the resize server", fix)
            self.add("redirect host", SKIP, "not checked: no website configuration")
            return
        if "RedirectAllRequestsTo" in website:
            self.add("website", FAIL, "the website redirects every request (RedirectAllRequestsTo), originals too", fix)
            self.add("redirect host", SKIP, "not checked: no RoutingRules")
            return
        problems, hosts = [], set()
        rules = website.get("RoutingRules") or []
        for code in ("404", "403"):
            matching = [r for r in rules if (r.get("Condition") or {}).get("HttpErrorCodeReturnedEquals") == code]
            if not matching:
                why = ("S3 answers 403, not 404, for a missing key when anonymous callers may not list the bucket "
                       "(the public-read policy)" if code == "403" else "S3 answers 404 for a missing key")
                problems.append(f"no RoutingRule redirects on {code} ({why})")
                continue
            for rule in matching:
                redirect = rule.get("Redirect") or {}
                prefix = (rule.get("Condition") or {}).get("KeyPrefixEquals")
                where = f"rule for {code}" + (f" (keys under {prefix!r})" if prefix else "")
                if redirect.get("ReplaceKeyPrefixWith") != REDIRECT_PREFIX:
                    problems.append(f"{where}: ReplaceKeyPrefixWith is {redirect.get('ReplaceKeyPrefixWith')!r}, "
                                    f"not {REDIRECT_PREFIX!r}")
                if redirect.get("HttpRedirectCode", "301") not in ("302", "307"):
                    problems.append(f"{where}: HttpRedirectCode {redirect.get('HttpRedirectCode', '301 (default)')}"
                                    " is cached by browsers and CDNs: stored thumbnails would still be redirected")
                if not redirect.get("HostName"):
                    problems.append(f"{where}: no HostName (it would redirect to the bucket itself)")
                else:
                    hosts.add(redirect["HostName"].lower())
                if self.protocol and redirect.get("Protocol", "http") != self.protocol:
                    problems.append(f"{where}: Protocol {redirect.get('Protocol', 'http')}, expected {self.protocol}")
        if problems:
            self.add("website", FAIL, "; ".join(problems), fix)
        else:
            self.add("website", PASS, f"missing keys (403 and 404) are redirected with 302 to "
                     f"{', '.join(sorted(hosts))}/{REDIRECT_PREFIX}<key>")
        if not hosts:
            self.add("redirect host", SKIP, "not checked: no redirect rule with a host")
        elif self.host is None:
            self.add("redirect host", SKIP, f"not checked: the rules point at {', '.join(sorted(hosts))}; "
                     "pass --host or set RESIZE_PUBLIC_HOST to compare with this server's host")
        elif hosts != {self.host.lower()}:
            self.add("redirect host", FAIL, f"the rules point at {', '.join(sorted(hosts))}, not at {self.host}", fix)
        else:
            self.add("redirect host", PASS, f"every redirect goes to {self.host}")

    def check_policy(self) -> None:
        from .storage.s3 import NotImplementedByServer

        bucket = self.settings.bucket
        fix = SETUP_BUCKET.format(host=self.host or "HOST") + " (applies deploy/bucket_policy.json)"
        inspector = self._inspector()
        try:
            text = inspector.policy()
        except NotImplementedByServer:
            self.add("bucket policy", SKIP, "not checked: this S3 server does not implement bucket policies")
            return
        except ResizeError as exc:
            self.add("bucket policy", FAIL, f"could not read the bucket policy: {exc.detail}",
                     f"grant s3:GetBucketPolicy on arn:aws:s3:::{bucket} to run this check")
            return
        if text is None:
            self.add("bucket policy", FAIL, "no bucket policy: the website endpoint answers 403 for every object, "
                     "thumbnails included", fix)
            return
        problems, reads = policy_problems(text, bucket)
        try:
            block = inspector.public_access_block()
        except (NotImplementedByServer, ResizeError):
            block = None
        if block and (block.get("BlockPublicPolicy") or block.get("RestrictPublicBuckets")):
            problems.append("S3 Block Public Access (BlockPublicPolicy/RestrictPublicBuckets) on the bucket "
                            "overrides the public-read policy")
            fix += ("; and aws s3api put-public-access-block --bucket " + bucket + " --public-access-block-"
                    "configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,"
                    "RestrictPublicBuckets=false")
        if not reads:
            problems.append("anonymous callers may not s3:GetObject: the website answers 403 for every object")
        if problems:
            self.add("bucket policy", FAIL, "; ".join(problems), fix)
        else:
            self.add("bucket policy", PASS, f"anonymous callers may s3:GetObject on {', '.join(reads)} and nothing more")

    def check_read(self) -> None:
        from .limits import SourceLimits
        from .storage.s3 import S3Storage

        settings = self.settings
        key = self.probe_source
        if key is None:
            prefix = settings.prefixes[0] if settings.prefixes else ""
            try:
                keys = self._inspector().keys(prefix, limit=200)
            except ResizeError as exc:
                self.add("read a source", SKIP, f"not checked: could not list the bucket to find an original "
                         f"({exc.detail}); pass --probe-source KEY")
                return
            key = next((k for k in keys if k.lower().endswith(IMAGE_EXTENSIONS)
                        and not _looks_derived(k, settings)), None)
            if key is None:
                self.add("read a source", SKIP, f"not checked: no original image among the first {len(keys)} keys "
                         f"under {prefix or 'the bucket'!r}; pass --probe-source KEY")
                return
        limits: SourceLimits = settings.source_limits
        try:
            source = S3Storage(self._s3(), settings.bucket).get(key, limits.max_bytes)
        except ResizeError as exc:
            self.add("read a source", FAIL, f"{key}: {exc.public}: {exc.detail}",
                     "grant s3:GetObject on the originals (RESIZE_SOURCE_PREFIXES) to the server's role"
                     if isinstance(exc, UpstreamAccessDenied) else "pass --probe-source with an original image key")
            return
        try:
            header = limits.inspect(source.data)
        except ResizeError as exc:
            # The read worked, which is what this checks; one bad upload is the client's 4xx, not a broken deployment.
            self.add("read a source", PASS, f"read {key}: {len(source.data)} bytes (the object itself would be "
                     f"refused: {exc.status} {exc.public}; pass --probe-source to probe another)")
            return
        self.add("read a source", PASS, f"read {key}: {len(source.data)} bytes, {header.format} "
                 f"{header.width}x{header.height}")

    def check_write(self) -> None:
        from .storage.base import StoredObject
        from .storage.s3 import S3Storage

        settings = self.settings
        key = probe_key(settings)
        try:
            S3Storage(self._s3(), settings.bucket).put(StoredObject(
                key=key, data=PROBE_PNG, content_type="image/png", cache_control="no-store",
                storage_class=settings.storage_class, metadata={"resize-doctor": "probe"}))
        except ResizeError as exc:
            self.add("write a derived key", FAIL, f"could not write {key}: {exc.detail}",
                     f"grant s3:PutObject on the derived keys (arn:aws:s3:::{settings.bucket}/*) to the server's role")
            return
        try:
            self._inspector().delete(key)
        except ResizeError as exc:
            self.add("write a derived key", PASS, f"wrote {key}; could not delete it ({exc.public}: the server needs "
                     "no s3:DeleteObject), so it stays until removed or expired by the derived-objects lifecycle rule")
            return
        self.add("write a derived key", PASS, f"wrote and deleted {key}")

    def check_imagemagick(self) -> None:
        settings = self.settings or Settings()
        report = (self._policy_report or _wand_policy_report)(DANGEROUS_CODERS + NEEDED_CODERS)
        where = f"{report['version'].split(' http')[0]}, MAGICK_CONFIGURE_PATH={os.environ.get('MAGICK_CONFIGURE_PATH', '(unset)')}"
        fix = ("use the policy shipped in deploy/policy.xml: set MAGICK_CONFIGURE_PATH to the deploy/ folder "
               "(gunicorn_conf.py does when it finds the file), or install it as the system policy.xml")
        coders = report["coders"]
        allowed = [c for c in DANGEROUS_CODERS if any(coders[c])]
        if allowed:
            self.add("imagemagick coders", FAIL, f"{where}: the policy lets ImageMagick read or write "
                     f"{', '.join(allowed)}", fix)
        else:
            missing = [c for c in NEEDED_CODERS if not all(coders[c])]
            if missing:
                self.add("imagemagick coders", FAIL, f"{where}: the policy refuses {', '.join(missing)}, which the "
                         "server reads and writes", fix)
            else:
                self.add("imagemagick coders", PASS, f"{where}: {', '.join(DANGEROUS_CODERS)} refused; "
                         f"{', '.join(NEEDED_CODERS)} allowed")
        limits = report["limits"]
        problems = []
        if limits["map"] or limits["disk"]:
            problems.append(f"map={_mib(limits['map'])}, disk={_mib(limits['disk'])}: the pixel cache may spill to "
                            "temporary files (both must be 0)")
        if limits["memory"] < settings.magick_memory_mb << 20:
            problems.append(f"memory is capped at {_mib(limits['memory'])}, below RESIZE_MAGICK_MEMORY_MB="
                            f"{settings.magick_memory_mb}: large sources would fail with 413")
        if limits["area"] < settings.max_source_pixels:
            problems.append(f"area is capped at {limits['area']} pixels, below RESIZE_MAX_SOURCE_PIXELS="
                            f"{settings.max_source_pixels}")
        summary = ", ".join(f"{k}={v}" for k, v in limits.items())
        if problems:
            self.add("imagemagick limits", FAIL, "; ".join(problems), fix)
        else:
            self.add("imagemagick limits", PASS, f"{summary} (no temporary files; the server's limits fit)")

    def check_redis(self) -> None:
        url = self.settings.redis_url if self.settings else ""
        if not url:
            self.add("redis", SKIP, "not configured (RESIZE_REDIS_URL unset): each instance renders a new key "
                     "once, so a fleet of N may render it N times")
            return
        import redis

        started = time.perf_counter()
        try:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        except redis.RedisError as exc:
            self.add("redis", FAIL, f"{_redact(url)} did not answer PING: {type(exc).__name__}: {exc}",
                     "start Redis or fix RESIZE_REDIS_URL (the server falls back to local single-flight meanwhile)")
            return
        self.add("redis", PASS, f"{_redact(url)} answered PING in {(time.perf_counter() - started) * 1000:.1f} ms")

    def check_queue(self) -> None:
        url = self.queue_url or (getattr(self.settings, "queue_url", "") if self.settings else "") \
            or self.environ.get("RESIZE_QUEUE_URL", "")
        if not url:
            self.add("queue", SKIP, "not configured (no --queue-url, RESIZE_QUEUE_URL unset)")
            return
        from .storage.s3 import queue_attributes

        region = self.settings.region if self.settings else "us-east-1"
        try:
            attributes = queue_attributes(url, region, client=self.sqs_client,
                                          endpoint_url=self.settings.sqs_endpoint_url if self.settings else "")
        except ResizeError as exc:
            self.add("queue", FAIL, f"{url} did not answer: {exc.detail}",
                     "fix RESIZE_QUEUE_URL, or grant sqs:GetQueueAttributes/ReceiveMessage/DeleteMessage on it")
            return
        waiting = attributes.get("ApproximateNumberOfMessages", "?")
        redrive = attributes.get("RedrivePolicy")
        dlq = json.loads(redrive).get("deadLetterTargetArn") if redrive else None
        self.add("queue", PASS, f"{url} answers: {waiting} messages waiting; "
                 + (f"dead-letter queue {dlq}" if dlq else "no dead-letter queue (poison messages are retried forever)"))

    # ---- output ------------------------------------------------------------

    def report(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = []
        for c in self.checks:
            label = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP"}[c.status]
            detail_lines = c.detail.splitlines() or [""]
            lines.append(f"{label}  {c.name:<{width}}  {detail_lines[0]}")
            lines += [" " * (width + 8) + more for more in detail_lines[1:]]
            if c.fix:
                lines.append(" " * 6 + f"fix: {c.fix}")
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        lines.append(f"{len(self.checks)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, "
                     f"{counts[SKIP]} not checked")
        return "\n".join(lines)


def policy_problems(text: str, bucket: str) -> tuple[list[str], list[str]]:
    """What a bucket policy grants anonymous callers beyond reading objects; and which objects they may read."""
    try:
        policy = json.loads(text)
    except ValueError:
        return ["the bucket policy is not JSON"], []
    problems, reads = [], []
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for i, statement in enumerate(statements):
        if statement.get("Effect") != "Allow":
            continue
        name = statement.get("Sid") or f"statement {i + 1}"
        if "NotPrincipal" in statement or "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{name}: Allow with NotPrincipal/NotAction/NotResource grants more than it names")
            continue
        if not _is_anonymous(statement.get("Principal")):
            continue  # grants to named principals (the server's role, admins) are not public
        actions = _as_list(statement.get("Action"))
        resources = _as_list(statement.get("Resource"))
        extra = sorted(a for a in actions if a.lower() != "s3:getobject")
        if extra:
            problems.append(f"{name}: anonymous callers may also {', '.join(extra)}")
        prefix = f"arn:aws:s3:::{bucket}/"
        outside = [r for r in resources if not r.startswith(prefix)]
        if outside:
            problems.append(f"{name}: anonymous access to {', '.join(outside)} (not objects of {bucket})")
        if not extra and not outside and "s3:getobject" in (a.lower() for a in actions):
            reads += resources
    return problems, reads


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _is_anonymous(principal) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return "*" in _as_list(principal.get("AWS"))
    return False


def _looks_derived(key: str, settings: Settings) -> bool:
    from .options import is_derived_key

    return is_derived_key(key, settings.catalog, style_separator=settings.style_separator)


def probe_key(settings: Settings) -> str:
    """A key the server would store a rendering under: the smallest allowed WxH size, else a preset."""
    prefix = settings.prefixes[0] if settings.prefixes else ""
    suffixes = []
    if settings.allowed_sizes and not settings.presets_only:
        # The smallest WxH size (a width- or height-only size only if there is no other).
        sizes = sorted(settings.allowed_sizes, key=lambda s: (not (s[0] and s[1]), (s[0] or 1) * (s[1] or 1), str(s)))
        suffixes += [f"_{w or ''}x{h or ''}" for w, h in sizes]
    suffixes += [f"_{name}" for name in sorted(settings.presets)]
    for suffix in suffixes:
        key = f"{prefix}resize-server-doctor-probe{suffix}.png"
        if _looks_derived(key, settings):
            return key
    return f"{prefix}resize-server-doctor-probe_50x50.png"


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _wand_policy_report(coders: tuple) -> dict:
    # The policy the server would run under: gunicorn_conf.py points ImageMagick at
    # deploy/policy.xml when MAGICK_CONFIGURE_PATH is unset; so does the doctor,
    # before ImageMagick is loaded.
    if "MAGICK_CONFIGURE_PATH" not in os.environ:
        from .website import deploy_dir

        folder = deploy_dir()
        if folder is not None:
            os.environ["MAGICK_CONFIGURE_PATH"] = str(folder)
    from .imaging.wand_engine import policy_report

    return policy_report(coders)

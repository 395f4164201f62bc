"""``resize-server``: thin commands over the service and the deploy files."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .config import ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings.from_env().validate()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def describe(exc) -> str:
    """A ``ResizeError`` for a human: the public message, then the cause (``detail``) the HTTP client never sees."""
    return exc.public if exc.detail == exc.public else f"{exc.public}: {exc.detail}"


def check_or_exit(settings: Settings) -> None:
    """The start-up check for long-running commands (serve, worker): one line naming the cause, exit 1."""
    from .errors import ResizeError
    from .startup import startup_check

    try:
        startup_check(settings)
    except ResizeError as exc:
        raise click.ClickException(
            f"start-up check failed: {describe(exc)} (RESIZE_STARTUP_CHECK=false skips this check)") from None


@click.group()
@click.version_option(__version__, prog_name="resize-server")
def main() -> None:
    """On-demand image thumbnails for S3 static websites."""


@main.command()
@click.option("--bind", default=None, help="host:port or unix:/path (default RESIZE_BIND or 127.0.0.1:8080)")
def serve(bind: str | None) -> None:
    """Run the resize server under gunicorn (configuration from RESIZE_* variables)."""
    if bind:
        os.environ["RESIZE_BIND"] = bind  # validated with the rest, and read by gunicorn_conf
    settings = _settings()  # fail fast, with every bad variable named, before gunicorn forks
    check_or_exit(settings)  # and with the cause when the bucket is unreachable with these credentials
    busy = _bind_in_use(settings.bind)
    if busy:
        raise click.ClickException(busy)
    args = [sys.executable, "-m", "gunicorn", "-c", "python:resize_server.gunicorn_conf",
            "resize_server.http:create_app()"]
    os.execv(sys.executable, args)


def _bind_in_use(bind: str) -> str | None:
    """One line naming a TCP address already in use (gunicorn would retry five times, then stop)."""
    import errno
    import socket

    if bind.startswith(("unix:", "fd://")):
        return None
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{bind} is in use: set RESIZE_BIND (or --bind) to another address"
            return None  # anything else (a host name to resolve...) is gunicorn's to report
    return None


@main.command("check-config")
def check_config() -> None:
    """Validate the RESIZE_* environment and print the effective settings, as you would write them."""
    settings = _settings()
    for variable, value in settings.environment():
        click.echo(f"{variable}={shlex.quote(value)}")


@main.command()
@click.argument("keys", nargs=-1, required=True)
def render(keys: tuple[str, ...]) -> None:
    """Render derived KEYS now and store them (warm the cache), e.g. photos/earth_200x200.jpg."""
    from .errors import ResizeError
    from .logs import setup
    from .service import build_service

    settings = _settings()
    setup(settings.log_level)
    try:
        service = build_service(settings)
    except ResizeError as exc:
        raise click.ClickException(describe(exc)) from None
    failed = 0
    for key in keys:
        try:
            result = service.resize_key(key)
            click.echo(f"{key}\t{result.width}x{result.height}\t{len(result.data)} bytes")
        except ResizeError as exc:
            failed += 1
            click.echo(f"{key}\t{exc.status} {describe(exc)}", err=True)
    service.drain()
    sys.exit(1 if failed else 0)


@main.command("setup-bucket")
@click.option("--host", required=True, help="host[:port] of the resize server or its load balancer")
@click.option("--protocol", type=click.Choice(["http", "https"]), default="http")
@click.option("--rules", type=click.Path(exists=True, path_type=Path), default=None,
              help="RoutingRules XML (default deploy/routing_rules.xml)")
@click.option("--policy", type=click.Path(exists=True, path_type=Path), default=None,
              help="bucket policy JSON (default deploy/bucket_policy.json)")
def setup_bucket(host: str, protocol: str, rules: Path | None, policy: Path | None) -> None:
    """Apply the website configuration (redirect to HOST) and the public-read policy to RESIZE_BUCKET."""
    from .errors import ResizeError
    from .storage.s3 import S3Storage, make_client
    from .website import bucket_policy, read_deploy_file, website_configuration

    settings = _settings()
    rules_xml = rules.read_text() if rules else read_deploy_file("routing_rules.xml")
    policy_json = policy.read_text() if policy else read_deploy_file("bucket_policy.json")
    try:
        storage = S3Storage(make_client(settings), settings.bucket)
        notes = storage.configure_website(website_configuration(rules_xml, host, protocol),
                                          bucket_policy(policy_json, settings.bucket))
    except ResizeError as exc:
        raise click.ClickException(describe(exc)) from None
    for note in notes:
        click.echo(f"note: {note}")
    click.echo(f"bucket {settings.bucket}: website redirects missing keys to {protocol}://{host}/resize.php?src=<key>")


@main.command()
@click.option("--host", default=None, help="host[:port] the bucket should redirect to (default RESIZE_PUBLIC_HOST)")
@click.option("--protocol", type=click.Choice(["http", "https"]), default=None,
              help="also check the redirects' protocol")
@click.option("--probe-source", default=None, metavar="KEY",
              help="an original image to read (default: the first one listed in the bucket)")
@click.option("--queue-url", default=None, help="the SQS queue of the event worker (default RESIZE_QUEUE_URL)")
def doctor(host: str | None, protocol: str | None, probe_source: str | None, queue_url: str | None) -> None:
    """Check configuration, credentials, bucket, website redirects, policy, S3 read/write, ImageMagick
    policy, Redis and the queue; print each with its fix; exit 1 if any check fails."""
    from .doctor import Doctor

    checks = Doctor(host=host, protocol=protocol, probe_source=probe_source, queue_url=queue_url)
    checks.run()
    click.echo(checks.report())
    sys.exit(1 if checks.failed else 0)


# ---- pre-generation: the SQS worker, backfill, warm-up and pruning ----------------------------


from .errors import ResizeError  # noqa: E402  (the commands below report storage failures cleanly)


def _bulk_service(settings: Settings):
    from .logs import setup
    from .service import build_service

    setup(settings.log_level)
    return build_service(settings)


def _preset_list(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


@main.command()
@click.option("--queue-url", required=True, envvar="RESIZE_QUEUE_URL", help="the SQS queue receiving S3 events")
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="messages worked on at once (default RESIZE_WORKER_CONCURRENCY)")
def worker(queue_url: str, concurrency: int | None) -> None:
    """Pre-generate the event presets for every upload announced on an SQS queue (until SIGTERM)."""
    from .events.sqs import SqsQueue, make_sqs_client
    from .events.worker import Worker

    settings = _settings()
    check_or_exit(settings)  # the bucket is reachable with these credentials, or exit with the cause
    service = _bulk_service(settings)
    queue = SqsQueue(make_sqs_client(settings, settings.sqs_endpoint_url, settings.worker_wait_seconds), queue_url)
    loop = Worker(service, queue, concurrency=concurrency or settings.worker_concurrency,
                  visibility_timeout=settings.worker_visibility_timeout, wait_seconds=settings.worker_wait_seconds)
    loop.install_signal_handlers()
    loop.run()
    service.drain()


@main.command()
@click.argument("url", metavar="s3://BUCKET/PREFIX")
@click.option("--presets", default=None, help="comma-separated preset names (default RESIZE_EVENT_PRESETS)")
@click.option("--dry-run", is_flag=True, help="list the originals that would be processed")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True, help="originals rendered at once")
def backfill(url: str, presets: str | None, dry_run: bool, workers: int) -> None:
    """Render the missing presets of every original under s3://BUCKET/PREFIX (resumable)."""
    from tqdm import tqdm

    from .maintenance import MaintenanceError, backfill as run_backfill, parse_s3_url

    settings = _settings()
    try:
        bucket, prefix = parse_s3_url(url)
    except MaintenanceError as exc:
        raise click.ClickException(str(exc)) from None
    service = _bulk_service(settings)
    with tqdm(unit=" originals", desc="backfill", disable=dry_run, dynamic_ncols=True) as bar:
        def on_done(_key, summary):
            bar.update(1)
            bar.set_postfix(rendered=summary.rendered, skipped=summary.skipped, failed=sum(summary.failed.values()),
                            refresh=False)

        try:
            summary = run_backfill(service, bucket, prefix, presets=_preset_list(presets), dry_run=dry_run,
                                   workers=workers, on_done=on_done)
        except MaintenanceError as exc:
            raise click.ClickException(str(exc)) from None
        except ResizeError as exc:  # the listing failed (bucket missing, access denied, ...)
            raise click.ClickException(describe(exc)) from None
    for line in summary.would_process:
        key, _, missing = line.partition("\t")
        click.echo(f"would render {missing}\ts3://{bucket}/{key}")
    if dry_run:
        click.echo(f"{len(summary.would_process)} of {summary.originals} originals lack outputs; "
                   f"{summary.skipped} outputs already there; {summary.ignored} derived or non-image keys ignored")
        return
    for line in summary.lines():
        click.echo(line)
    sys.exit(130 if summary.interrupted else 1 if summary.failed else 0)


@main.command()
@click.option("--logs", "logs_url", required=True, metavar="s3://LOGBUCKET/PREFIX", help="S3 server access logs")
@click.option("--since", default="7d", show_default=True, help="how far back to read (e.g. 7d, 12h)")
@click.option("--top", type=click.IntRange(1), default=100, show_default=True, help="keys to render")
@click.option("--dry-run", is_flag=True, help="list what would be rendered")
def warm(logs_url: str, since: str, top: int, dry_run: bool) -> None:
    """Render ahead of time the derived keys of RESIZE_BUCKET most often requested and missing."""
    from .accesslog import parse_duration
    from .maintenance import MaintenanceError, parse_s3_url, warm as run_warm

    settings = _settings()
    try:
        log_bucket, log_prefix = parse_s3_url(logs_url)
        since_seconds = parse_duration(since)
    except (MaintenanceError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    service = _bulk_service(settings)
    try:
        summary = run_warm(service, service.storage.for_bucket(log_bucket), log_prefix, since_seconds=since_seconds,
                           top=top, dry_run=dry_run)
    except ResizeError as exc:  # reading the logs failed
        raise click.ClickException(describe(exc)) from None
    misses = dict(summary.candidates)
    for key in summary.rendered:
        click.echo(f"{'would render' if dry_run else 'rendered'}\t{misses[key]} misses\t{key}")
    for line in summary.lines():
        click.echo(line)
    sys.exit(1 if summary.failed else 0)


@main.command()
@click.option("--logs", "logs_url", required=True, metavar="s3://LOGBUCKET/PREFIX", help="S3 server access logs")
@click.option("--unused-days", type=click.FloatRange(min=0, min_open=True), required=True,
              help="delete derived objects not requested in this many days")
@click.option("--prefix", default="", help="only objects of RESIZE_BUCKET under this prefix")
@click.option("--dry-run", is_flag=True, help="list what would be deleted and how many bytes")
def prune(logs_url: str, unused_days: float, prefix: str, dry_run: bool) -> None:
    """Delete derived objects of RESIZE_BUCKET (metadata derived-from, never originals) unused for N days."""
    from .maintenance import MaintenanceError, parse_s3_url, prune as run_prune

    settings = _settings()
    service = _bulk_service(settings)
    try:
        log_bucket, log_prefix = parse_s3_url(logs_url)
        summary = run_prune(service, service.storage.for_bucket(log_bucket), log_prefix, unused_days=unused_days,
                            prefix=prefix, dry_run=dry_run)
    except MaintenanceError as exc:
        raise click.ClickException(str(exc)) from None
    except ResizeError as exc:
        raise click.ClickException(describe(exc)) from None
    for key, size in summary.deleted:
        click.echo(f"{'would delete' if dry_run else 'deleted'}\t{size}\t{key}")
    for line in summary.lines():
        click.echo(line)

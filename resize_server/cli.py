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
    args = [sys.executable, "-m", "gunicorn", "-c", "python:resize_server.gunicorn_conf",
            "resize_server.http:create_app()"]
    os.execv(sys.executable, args)


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

"""``resize-server``: thin commands over the service and the deploy files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .config import ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings.from_env().validate()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """On-demand image thumbnails for S3 static websites."""


@main.command()
@click.option("--bind", default=None, help="host:port (default RESIZE_BIND or 127.0.0.1:8080)")
def serve(bind: str | None) -> None:
    """Run the resize server under gunicorn (configuration from RESIZE_* variables)."""
    _settings()  # fail fast, with every bad variable named, before gunicorn forks
    if bind:
        os.environ["RESIZE_BIND"] = bind
    args = [sys.executable, "-m", "gunicorn", "-c", "python:resize_server.gunicorn_conf",
            "resize_server.http:create_app()"]
    os.execv(sys.executable, args)


@main.command("check-config")
def check_config() -> None:
    """Validate the RESIZE_* environment and print the effective settings."""
    settings = _settings()
    for name, value in sorted(settings.__dict__.items()):
        click.echo(f"RESIZE_{name.upper()}={value}")


@main.command()
@click.argument("keys", nargs=-1, required=True)
def render(keys: tuple[str, ...]) -> None:
    """Render derived KEYS now and store them (warm the cache), e.g. photos/earth_200x200.jpg."""
    from .errors import ResizeError
    from .logs import setup
    from .service import build_service

    settings = _settings()
    setup(settings.log_level)
    service = build_service(settings)
    failed = 0
    for key in keys:
        try:
            result = service.resize_key(key)
            click.echo(f"{key}\t{result.width}x{result.height}\t{len(result.data)} bytes")
        except ResizeError as exc:
            failed += 1
            click.echo(f"{key}\t{exc.status} {exc.public}", err=True)
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
    storage = S3Storage(make_client(settings), settings.bucket)
    try:
        notes = storage.configure_website(website_configuration(rules_xml, host, protocol),
                                          bucket_policy(policy_json, settings.bucket))
    except ResizeError as exc:
        raise click.ClickException(f"{exc.public}: {exc.detail}") from None
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

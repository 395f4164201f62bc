"""Backfill (resumable), warm-up and pruning from S3 server access logs, against moto."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

import pytest
from click.testing import CliRunner

from resize_server.cli import main as cli
from resize_server.maintenance import MaintenanceError, backfill, prune, warm
from tests.conftest import dimensions, photo
from tests.events.conftest import BUCKET, EXPECTED, PRESETS, Calls

LOGS = "access-logs"
ORIGINALS = [f"photos/{name}.jpg" for name in ("a", "b", "c d", "e+f", "été", "g")]


def expected_outputs(keys=ORIGINALS) -> list[str]:
    return sorted(f"{k[:-4]}_{p}.jpg" for k in keys for p in EXPECTED)


@pytest.fixture
def originals(aws):
    for key in ORIGINALS:
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    aws.s3.put_object(Bucket=BUCKET, Key="photos/x_200x200.jpg", Body=photo())  # looks derived: not an original
    aws.s3.put_object(Bucket=BUCKET, Key="photos/readme.txt", Body=b"hello")
    aws.s3.put_object(Bucket=BUCKET, Key="other/z.jpg", Body=photo())  # outside the prefix
    return ORIGINALS


def test_backfill_renders_what_is_missing_and_resumes_after_an_interrupt(service, aws, originals):
    dry = backfill(service, BUCKET, "photos/", dry_run=True)
    assert len(dry.would_process) == 6 and dry.ignored == 2
    puts = Calls(aws.s3, "PutObject")
    done = []

    def interrupt_after_two(key, summary):
        done.append(key)
        if len(done) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    first = backfill(service, BUCKET, "photos/", workers=2, on_done=interrupt_after_two)
    assert first.interrupted
    assert 2 <= first.originals < 6 and first.rendered == 3 * first.originals
    assert len(puts.keys) == first.rendered  # counted = stored: the renders under way finished
    second = backfill(service, BUCKET, "photos/", workers=2)
    assert not second.interrupted and not second.failed
    assert second.rendered == 18 - first.rendered
    assert second.skipped == first.rendered  # resumed: what was there (same source ETag) is skipped
    assert Counter(puts.keys) == Counter(expected_outputs())  # each output rendered exactly once
    for key in expected_outputs():
        preset = key.rsplit("_", 1)[1][:-4]
        assert dimensions(aws.body(key)) == ("JPEG", *EXPECTED[preset])
    assert backfill(service, BUCKET, "photos/", dry_run=True).would_process == []


def test_backfill_counts_failures_by_reason(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="p/good.jpg", Body=photo())
    aws.s3.put_object(Bucket=BUCKET, Key="p/bad.jpg", Body=b"not an image")
    aws.s3.put_object(Bucket=BUCKET, Key="p/cut.jpg", Body=photo()[:20000])
    summary = backfill(service, BUCKET, "p/", presets=["thumb"], workers=2)
    assert summary.rendered == 1
    assert summary.failed == Counter({"415 UnsupportedFormat": 1, "422 CorruptImage": 1})
    assert "failed: 2 (415 UnsupportedFormat: 1, 422 CorruptImage: 1)" in summary.lines()


def test_backfill_command(aws, originals, monkeypatch):
    monkeypatch.setenv("RESIZE_BUCKET", BUCKET)
    monkeypatch.setenv("RESIZE_PRESETS", PRESETS)
    result = CliRunner().invoke(cli, ["backfill", "s3://images/photos/", "--presets", "thumb,small",
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "rendered: 12" in result.output and "failed: 0" in result.output
    again = CliRunner().invoke(cli, ["backfill", "s3://images/photos/", "--presets", "thumb,small", "--dry-run"])
    assert again.exit_code == 0 and "0 of 6 originals lack outputs; 12 outputs already there" in again.output


# ---- access logs in the documented format --------------------------------------------------------


def log_line(when: datetime, operation: str, key: str | None, status: int, error: str | None = None,
             bucket: str = BUCKET, sent: int = 0, size: int | None = None) -> str:
    """One record as S3 writes it: 26 fields, quoted strings with spaces, [time], "-" for absent ones."""
    encoded = quote_plus(key, safe="/") if key else "-"
    method = operation.split(".")[1]
    uri = f'"{method} /{quote_plus(key, safe="/").replace("+", "%20") if key else ""} HTTP/1.1"'
    return " ".join([
        "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be", bucket,
        when.strftime("[%d/%b/%Y:%H:%M:%S +0000]"), "192.0.2.3", "-", "3E57427F3EXAMPLE", operation, encoded,
        uri, str(status), error or "-", str(sent) if sent else "-", str(size) if size else "-", "7", "-",
        '"https://www.example.com/a page"', '"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"', "-",
        "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234=", "-", "-", "-",
        f"{bucket}.s3-website-us-east-1.amazonaws.com", "-", "-", "-",
    ])


def write_logs(aws, name: str, lines: list[str]) -> None:
    if LOGS not in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]:
        aws.s3.create_bucket(Bucket=LOGS)
    aws.s3.put_object(Bucket=LOGS, Key=f"access/{name}", Body=("\n".join(lines) + "\n").encode())


def test_warm_renders_the_most_missed_keys_still_missing(service, aws):
    now = datetime.now(timezone.utc)
    for key in ("photos/earth.jpg", "photos/my photo.jpg"):
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    service.resize_key("photos/earth_thumb.jpg")  # missed in the logs, stored since
    service.drain()
    recent = now - timedelta(hours=5)
    miss = lambda key, status=404, error="NoSuchKey", **kw: log_line(recent, "WEBSITE.GET.OBJECT", key, status,
                                                                       error, **kw)
    write_logs(aws, "2026-12-01-10-00-00-A1B2C3D4", [miss("photos/earth_200x200.jpg")] * 3
               + [miss("photos/earth_thumb.jpg")] * 4 + [miss("photos/my photo_small.jpg", 403, "AccessDenied")] * 3
               + ["this line is not a log record"])
    write_logs(aws, "2026-12-01-11-00-00-E5F6A7B8", [miss("photos/earth_200x200.jpg")] * 2
               + [miss("photos/earth_50x50.jpg")] * 2
               + [miss("photos/earth.jpg")] * 10  # an original's key: not derived
               + [log_line(recent, "REST.GET.OBJECT", "photos/earth_400x400.jpg", 404, "NoSuchKey")] * 9
               + [log_line(now - timedelta(days=10), "WEBSITE.GET.OBJECT", "photos/earth_800x800.jpg", 404,
                           "NoSuchKey")] * 20  # older than --since
               + [miss("photos/earth_100x100.jpg", bucket="another-bucket")] * 9)

    dry = warm(service, service.storage.for_bucket(LOGS), "access/", since_seconds=7 * 86400, top=2, dry_run=True)
    assert dry.candidates == [("photos/earth_200x200.jpg", 5), ("photos/earth_thumb.jpg", 4),
                              ("photos/my photo_small.jpg", 3), ("photos/earth_50x50.jpg", 2)]
    assert dry.rendered == ["photos/earth_200x200.jpg", "photos/my photo_small.jpg"]
    assert dry.present == ["photos/earth_thumb.jpg"]
    assert len(dry.log_errors) == 1
    assert "photos/earth_200x200.jpg" not in aws.keys()  # a dry run renders nothing

    summary = warm(service, service.storage.for_bucket(LOGS), "access/", since_seconds=7 * 86400, top=2)
    assert summary.rendered == dry.rendered and not summary.failed
    assert dimensions(aws.body("photos/earth_200x200.jpg")) == ("JPEG", 200, 133)
    assert dimensions(aws.body("photos/my photo_small.jpg")) == ("JPEG", 200, 133)
    assert "photos/earth_50x50.jpg" not in aws.keys()  # beyond --top


def test_prune_deletes_only_unused_derived_objects(service, aws):
    for key in ("a.jpg", "b.jpg", "c.jpg"):
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=photo())
    for key in ("a_200x200.jpg", "b_200x200.jpg", "c_thumb.jpg"):
        service.resize_key(key)
    service.drain()
    aws.s3.put_object(Bucket=BUCKET, Key="d_200x200.jpg", Body=photo())  # uploaded by a user: no metadata
    sizes = {o["Key"]: o["Size"] for o in aws.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    now = datetime.now(timezone.utc) + timedelta(days=31)  # a month later: every object is older than 30 days
    get = lambda key, days: log_line(now - timedelta(days=days), "WEBSITE.GET.OBJECT", key, 200, sent=900, size=900)
    write_logs(aws, "2026-10-01-00-00-00-00000000", [get("a_200x200.jpg", 40), get("b_200x200.jpg", 40)])
    write_logs(aws, "2026-11-30-00-00-00-00000000", [
        get("a_200x200.jpg", 2),  # still in use
        log_line(now - timedelta(days=1), "REST.GET.OBJECT", "c_thumb.jpg", 404, "NoSuchKey")])  # a miss: not a use

    logs = service.storage.for_bucket(LOGS)
    dry = prune(service, logs, "access/", unused_days=30, dry_run=True, now=now)
    assert sorted(dry.deleted) == [("b_200x200.jpg", sizes["b_200x200.jpg"]), ("c_thumb.jpg", sizes["c_thumb.jpg"])]
    assert dry.deleted_bytes == sizes["b_200x200.jpg"] + sizes["c_thumb.jpg"]
    assert dry.kept_originals == 4 and dry.kept_recent == 1
    assert len(aws.keys()) == 7  # a dry run deletes nothing

    summary = prune(service, logs, "access/", unused_days=30, now=now)
    assert sorted(summary.deleted) == sorted(dry.deleted)
    assert aws.keys() == ["a.jpg", "a_200x200.jpg", "b.jpg", "c.jpg", "d_200x200.jpg"]


def test_prune_refuses_when_the_logs_do_not_reach_back(service, aws):
    aws.s3.put_object(Bucket=BUCKET, Key="a.jpg", Body=photo())
    service.resize_key("a_200x200.jpg")
    service.drain()
    now = datetime.now(timezone.utc) + timedelta(days=31)
    write_logs(aws, "recent", [log_line(now - timedelta(days=3), "WEBSITE.GET.OBJECT", "x_200x200.jpg", 200)])
    with pytest.raises(MaintenanceError, match="not 30 days back"):
        prune(service, service.storage.for_bucket(LOGS), "access/", unused_days=30, now=now)
    with pytest.raises(MaintenanceError, match="no records"):
        prune(service, service.storage.for_bucket(LOGS), "nothing-here/", unused_days=30, now=now)
    assert "a_200x200.jpg" in aws.keys()


def test_warm_and_prune_commands(aws, monkeypatch):
    monkeypatch.setenv("RESIZE_BUCKET", BUCKET)
    monkeypatch.setenv("RESIZE_PRESETS", PRESETS)
    aws.s3.put_object(Bucket=BUCKET, Key="earth.jpg", Body=photo())
    now = datetime.now(timezone.utc)
    write_logs(aws, "one", [log_line(now - timedelta(days=40), "WEBSITE.GET.OBJECT", "x.jpg", 200)]
               + [log_line(now - timedelta(hours=1), "WEBSITE.GET.OBJECT", "earth_thumb.jpg", 404, "NoSuchKey")])
    result = CliRunner().invoke(cli, ["warm", "--logs", "s3://access-logs/access/", "--since", "2d", "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "rendered\t1 misses\tearth_thumb.jpg" in result.output
    assert dimensions(aws.body("earth_thumb.jpg")) == ("JPEG", 50, 33)
    result = CliRunner().invoke(cli, ["prune", "--logs", "s3://access-logs/access/", "--unused-days", "30", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete: 0 derived objects, 0 bytes" in result.output  # just created: kept
    bad = CliRunner().invoke(cli, ["warm", "--logs", "access-logs/access/"])
    assert bad.exit_code != 0 and "not an s3:// URL" in bad.output


def test_backfill_rejects_unknown_presets_and_missing_buckets(aws, monkeypatch):
    monkeypatch.setenv("RESIZE_BUCKET", BUCKET)
    monkeypatch.setenv("RESIZE_PRESETS", PRESETS)
    result = CliRunner().invoke(cli, ["backfill", "s3://images/", "--presets", "thumb,huge"])
    assert result.exit_code == 1 and "unknown preset huge" in result.output
    result = CliRunner().invoke(cli, ["backfill", "s3://no-such-bucket/"])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output

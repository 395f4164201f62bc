"""S3 server access logs, in the format AWS documents (quoted fields, bracketed time, "-")."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from resize_server.accesslog import LogParseError, parse_duration, parse_line, parse_lines, tokenize

# The first record of AWS's documented example (all 27 fields).
AWS_EXAMPLE = (
    '79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be amzn-s3-demo-bucket1 '
    '[06/Feb/2019:00:00:38 +0000] 192.0.2.3 79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be '
    '3E57427F3EXAMPLE REST.GET.VERSIONING - "GET /amzn-s3-demo-bucket1?versioning HTTP/1.1" 200 - 113 - 7 - '
    '"-" "S3Console/0.4" - s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 '
    'ECDHE-RSA-AES128-GCM-SHA256 AuthHeader amzn-s3-demo-bucket1.s3.us-west-1.amazonaws.com TLSV1.2 '
    'arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes us-east-1'
)


def website_miss(key_field: str, status: int = 404, error: str = "NoSuchKey") -> str:
    return (
        f'owner images [02/Dec/2026:10:11:12 +0000] 203.0.113.9 - 9D1C2E3F4A5B6C7D WEBSITE.GET.OBJECT {key_field} '
        f'"GET /{key_field} HTTP/1.1" {status} {error} 315 - 12 - "https://example.com/page with space" '
        f'"Mozilla/5.0 (X11; Linux x86_64) \\"quoted\\" agent" - hostid= - - - images.s3-website-us-east-1.amazonaws.com -'
    )


def test_the_documented_example():
    entry = parse_line(AWS_EXAMPLE)
    assert entry.bucket == "amzn-s3-demo-bucket1"
    assert entry.time == datetime(2019, 2, 6, 0, 0, 38, tzinfo=timezone.utc)
    assert entry.operation == "REST.GET.VERSIONING"
    assert entry.key is None
    assert entry.request_uri == "GET /amzn-s3-demo-bucket1?versioning HTTP/1.1"
    assert (entry.http_status, entry.error_code, entry.bytes_sent, entry.object_size) == (200, None, 113, None)
    assert entry.user_agent == "S3Console/0.4"
    assert entry.referer is None
    assert len(tokenize(AWS_EXAMPLE)) == 27  # fields AWS added after the 26 named ones are tolerated


def test_quoted_fields_with_spaces_and_escaped_quotes():
    entry = parse_line(website_miss("photos/earth_200x200.jpg"))
    assert entry.referer == "https://example.com/page with space"
    assert entry.user_agent == 'Mozilla/5.0 (X11; Linux x86_64) "quoted" agent'
    assert entry.is_website_get and entry.is_miss
    assert (entry.http_status, entry.error_code) == (404, "NoSuchKey")


@pytest.mark.parametrize("field, key", [
    ("photos/my+photo_200x200.jpg", "photos/my photo_200x200.jpg"),
    ("photos/a%2Bb_200x200.jpg", "photos/a+b_200x200.jpg"),
    ("photos/%C3%A9t%C3%A9_thumb.jpg", "photos/été_thumb.jpg"),
])
def test_keys_are_decoded(field, key):
    assert parse_line(website_miss(field)).key == key


@pytest.mark.parametrize("status, miss", [(404, True), (403, True), (302, True), (307, True), (200, False),
                                          (304, False), (500, False)])
def test_what_counts_as_a_website_miss(status, miss):
    assert parse_line(website_miss("a_50x50.jpg", status)).is_miss is miss


def test_rest_reads_are_reads_but_not_website_misses():
    line = website_miss("a_50x50.jpg").replace("WEBSITE.GET.OBJECT", "REST.GET.OBJECT")
    entry = parse_line(line)
    assert entry.is_object_read and not entry.is_miss


def test_older_shorter_records_are_accepted():
    # Logs from before AWS added the later fields stop after the version id.
    short = " ".join(AWS_EXAMPLE.split(" ")[:19])
    assert parse_line(short).http_status == 200


@pytest.mark.parametrize("line", [
    "just some words",
    'owner b [02/Dec/2026:10:11:12 +0000] ip - id WEBSITE.GET.OBJECT k "GET /k HTTP/1.1 404',  # open quote
    'owner b [02/Dec/2026:10:11:12 +0000 ip - id WEBSITE.GET.OBJECT k "GET /k HTTP/1.1" 404',  # open bracket
    'owner b [yesterday] ip - id WEBSITE.GET.OBJECT k "GET /k HTTP/1.1" 404 - 1 - 1 - "-" "-" -',
    'owner b [02/Dec/2026:10:11:12 +0000] ip - id WEBSITE.GET.OBJECT k "GET /k HTTP/1.1" abc - 1 - 1 - "-" "-" -',
    'owner b [02/Dec/2026:10:11:12 +0000] ip - id WEBSITE.GET.OBJECT %FF "GET /k HTTP/1.1" 404 - 1 - 1 - "-" "-" -',
])
def test_bad_lines_are_errors(line):
    with pytest.raises(LogParseError):
        parse_line(line)


def test_parse_lines_skips_and_reports_bad_lines():
    errors: list[str] = []
    entries = list(parse_lines([AWS_EXAMPLE, "", "garbage line", website_miss("x_50x50.jpg")], errors))
    assert [e.operation for e in entries] == ["REST.GET.VERSIONING", "WEBSITE.GET.OBJECT"]
    assert len(errors) == 1 and errors[0].startswith("line 3:")


@pytest.mark.parametrize("text, seconds", [("7d", 604800), ("12h", 43200), ("30m", 1800), ("90s", 90),
                                           ("90", 90), ("1w", 604800), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "seven days", "7y", "-1d"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)

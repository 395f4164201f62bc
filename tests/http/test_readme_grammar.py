"""Every row of the README's key-grammar table, requested against the app: the docs cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resize_server.http import create_app
from tests.conftest import BUCKET, photo

README = Path(__file__).resolve().parents[2] / "README.md"


def grammar_rows() -> list[tuple[str, int, str]]:
    text = README.read_text()
    table = text[text.index("| request | example | status and message |"):]
    table = table[:table.index("\n\n")]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        examples = re.findall(r"`(/[^`]*)`", cells[1])
        status_match = re.match(r"(\d{3})(?: `([^`]*)`)?", cells[2])
        assert status_match, line
        for example in examples:
            rows.append((example, int(status_match[1]), status_match[2] or ""))
    return rows


ROWS = grammar_rows()


def test_the_table_was_found():
    assert len(ROWS) >= 20


@pytest.fixture(scope="module")
def readme_client():
    from moto import mock_aws

    from resize_server.storage.s3 import S3Storage, make_client
    from resize_server.config import Settings

    with mock_aws():
        settings = Settings(bucket=BUCKET)
        client = make_client(settings)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="samples/earth.jpg", Body=photo(), ContentType="image/jpeg")
        app = create_app({"bucket": BUCKET, "presets": "small=200x200"}, storage=S3Storage(client, BUCKET))
        yield app.test_client()


@pytest.mark.parametrize("url, status, message", ROWS)
def test_readme_row(readme_client, url, status, message):
    response = readme_client.get(url)
    assert response.status_code == status, (url, response.get_data(as_text=True)[:200])
    if status == 200:
        assert response.mimetype.startswith("image/")
    else:
        assert response.mimetype == "text/plain" and response.headers["Cache-Control"] == "no-store"
        assert message in response.get_data(as_text=True)

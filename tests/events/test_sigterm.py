"""SIGTERM to a real ``resize-server worker`` process, against a real moto server: nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from resize_server import devstack
from resize_server.events.s3events import decode_event_key
from tests.conftest import ROOT, dimensions, photo
from tests.events.conftest import BUCKET, EXPECTED, PRESETS, create_queues, notify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def moto_server(tmp_path):
    port = devstack.free_port()
    binary = Path(sys.executable).parent / "moto_server"
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        devstack.wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        devstack.stop(proc)


@pytest.mark.parametrize("signals", [1, 2], ids=["graceful", "second-signal-exits-at-once"])
def test_sigterm_during_a_batch_loses_nothing(moto_server, tmp_path, signals):
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    queue_url, dlq_url = create_queues(sqs, "events", visibility=2, max_receives=10)
    notify(s3, sqs, BUCKET, queue_url)
    originals = [f"up/{i}.jpg" for i in range(8)]
    for key in originals:
        s3.put_object(Bucket=BUCKET, Key=key, Body=photo())

    env = {**os.environ, "RESIZE_BUCKET": BUCKET, "RESIZE_PRESETS": PRESETS,
           "RESIZE_S3_ENDPOINT_URL": moto_server, "RESIZE_SQS_ENDPOINT_URL": moto_server,
           "RESIZE_WORKER_CONCURRENCY": "2", "RESIZE_WORKER_WAIT_SECONDS": "1",
           "RESIZE_WORKER_VISIBILITY_TIMEOUT": "2", "MAGICK_CONFIGURE_PATH": str(ROOT / "deploy")}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "resize-server"), "worker", "--queue-url",
                                 queue_url], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
            if any(k.endswith("_thumb.jpg") for k in keys):
                break  # mid-batch: the first outputs are being stored
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGTERM)
        if signals == 2:
            time.sleep(0.05)
            os.kill(proc.pid, signal.SIGTERM)  # "stop now": in-flight work is abandoned, not lost
        assert proc.wait(40) == (0 if signals == 1 else -signal.SIGTERM)
    finally:
        devstack.stop(proc)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    if signals == 1:
        assert "worker stopping: finishing in-flight work" in messages and messages[-1] == "worker stopped"
        stats = lines[-1]
        assert stats["received"] == stats["deleted"] + stats["left_for_retry"]

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    complete = {k for k in originals if all(f"{k[:-4]}_{p}.jpg" in keys for p in EXPECTED)}
    assert complete != set(originals)  # stopped mid-way
    if signals == 1:
        assert complete  # the work in flight when the signal came was finished
    # No output without its siblings' message still pending, no half-written object.
    for key in keys - set(originals):
        assert dimensions(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())[0] == "JPEG"
    # Every original not complete still has its event on the queue (in flight ones reappear after 2 s).
    time.sleep(2.5)
    pending = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not got:
            break
        for message in got:
            body = json.loads(message["Body"])
            pending += [decode_event_key(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
    assert set(originals) - complete <= set(pending)
    assert sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"] == "0"

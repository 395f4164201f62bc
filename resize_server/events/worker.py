"""The SQS worker: long-polls S3 event notifications and pre-generates presets for each upload.

Delivery rules (see ``pregen.py`` for what happens inside one message):

* a message is deleted only after every render it asked for is stored, or
  when it can never succeed (not an S3 event, a 413/415/422 original, a source
  deleted before we got to it);
* a transient failure leaves the message alone: it reappears after its
  visibility timeout and, after the queue's ``maxReceiveCount``, the redrive
  policy moves it to the dead-letter queue;
* at most ``concurrency`` messages are worked on at once (a bounded thread
  pool; the receive asks only for as many as there are free slots), and a
  heartbeat extends the visibility of those still in progress so a slow render
  is not handed to another worker meanwhile;
* SIGTERM/SIGINT stop the receiving; work in flight is finished (and its
  messages deleted) before ``run`` returns; a second signal exits at once.  A message whose work did not finish
  is simply not deleted, so it comes back: nothing is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ResizeError
from .pregen import process_body

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    received: int = 0
    deleted: int = 0
    left_for_retry: int = 0
    dropped: int = 0  # deleted without rendering: poison, malformed, source gone
    rendered: int = 0


@dataclass
class _InFlight:
    message: object
    visible_until: float


class Worker:
    def __init__(self, service, queue, *, concurrency: int = 2, visibility_timeout: int = 120,
                 wait_seconds: int = 20, presets=None, receive_backoff: float = 2.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.service = service
        self.queue = queue
        self.concurrency = concurrency
        self.visibility_timeout = visibility_timeout
        self.wait_seconds = wait_seconds
        self.presets = presets
        self.receive_backoff = receive_backoff
        self.stats = WorkerStats()
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._inflight: dict[str, _InFlight] = {}

    # ---- control -------------------------------------------------------------

    def stop(self, *_args) -> None:
        """Stop receiving; in-flight work finishes (safe to call from a signal handler)."""
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (ECS, Kubernetes, systemd) and SIGINT stop the worker gracefully."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            # A second signal: exit now. Unfinished messages are not deleted, so they come back.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # Only set a flag here: logging from a signal handler can deadlock on the handler's lock.
        self.stopping.set()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._inflight)

    # ---- the loop ------------------------------------------------------------

    def run(self, *, until_empty: bool = False) -> WorkerStats:
        """Poll until stopped (or, with ``until_empty``, until the queue has nothing visible left)."""
        log.info("worker started", extra={"fields": {
            "queue": getattr(self.queue, "url", ""), "concurrency": self.concurrency,
            "visibility_timeout": self.visibility_timeout, "wait_seconds": self.wait_seconds}})
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="pregen")
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(heartbeat_stop,), name="visibility",
                                     daemon=True)
        heartbeat.start()
        try:
            while not self.stopping.is_set():
                free = self._wait_for_free_slots()
                if free == 0:
                    continue
                try:
                    messages = self.queue.receive(free, self.wait_seconds, self.visibility_timeout)
                except ResizeError as exc:
                    self.service.metrics.inc("worker_queue_errors_total", operation="receive")
                    log.error("receive failed; retrying", extra={"fields": {
                        "error": type(exc).__name__, "detail": exc.detail}})
                    self.stopping.wait(self.receive_backoff)
                    continue
                if not messages:
                    if until_empty and self._wait_idle():
                        break
                    continue
                # Messages received after a SIGTERM arrived are still worked on (the
                # poll was under way): finishing them is as safe as releasing them.
                now = time.monotonic()
                with self._cond:
                    for message in messages:
                        self._inflight[message.id] = _InFlight(message, now + self.visibility_timeout)
                self._count(received=len(messages))
                self.service.metrics.inc("worker_messages_received_total", len(messages))
                for message in messages:
                    pool.submit(self._work, message)
        finally:
            if self.stopping.is_set():
                log.info("worker stopping: finishing in-flight work", extra={"fields": {
                    "in_flight": self.in_flight}})
            pool.shutdown(wait=True)
            heartbeat_stop.set()
            heartbeat.join()
            log.info("worker stopped", extra={"fields": self.stats.__dict__})
        return self.stats

    def _wait_for_free_slots(self) -> int:
        with self._cond:
            while len(self._inflight) >= self.concurrency and not self.stopping.is_set():
                self._cond.wait(0.5)
            return 0 if self.stopping.is_set() else self.concurrency - len(self._inflight)

    def _wait_idle(self) -> bool:
        """For ``until_empty``: True when nothing is in flight (after waiting for it)."""
        with self._cond:
            if not self._inflight:
                return True
            while self._inflight:
                self._cond.wait(0.5)
        return False  # the finished work may have been left for redelivery: poll once more

    def _work(self, message) -> None:
        try:
            outcome = process_body(self.service, message.body, presets=self.presets)
            self._count(rendered=outcome.rendered)
            if outcome.retry:
                self._count(left_for_retry=1)
                self.service.metrics.inc("worker_messages_total", outcome="failed")  # left for redelivery
                return
            try:
                self.queue.delete(message)
            except ResizeError as exc:
                # It comes back and is skipped then (its outputs are stored, same source ETag).
                self.service.metrics.inc("worker_queue_errors_total", operation="delete")
                log.error("delete failed; the message will be redelivered", extra={"fields": {
                    "message_id": message.id, "error": type(exc).__name__, "detail": exc.detail}})
                return
            dropped = bool(outcome.permanent) and not outcome.rendered
            self._count(deleted=1, dropped=int(dropped))
            # "dead_lettered": deleted as permanently bad (it would only cycle into the DLQ).
            self.service.metrics.inc("worker_messages_total", outcome="dead_lettered" if dropped else "processed")
        except Exception:
            log.exception("message handling failed; left for redelivery", extra={"fields": {
                "message_id": message.id}})
        finally:
            with self._cond:
                self._inflight.pop(message.id, None)
                self._cond.notify_all()

    def _count(self, **amounts: int) -> None:
        with self._cond:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _heartbeat(self, stop: threading.Event) -> None:
        """Extend the visibility of messages still in progress before it runs out."""
        tick = min(10.0, max(0.2, self.visibility_timeout / 4))
        while not stop.wait(tick):
            now = time.monotonic()
            with self._cond:
                due = [f for f in self._inflight.values()
                       if f.visible_until - now < self.visibility_timeout / 2]
            if not due:
                continue
            try:
                failed = set(self.queue.extend([f.message for f in due], self.visibility_timeout))
            except ResizeError as exc:
                self.service.metrics.inc("worker_queue_errors_total", operation="change_visibility")
                log.error("visibility extension failed", extra={"fields": {
                    "error": type(exc).__name__, "detail": exc.detail}})
                continue
            with self._cond:
                for f in due:
                    if f.message.id not in failed:
                        f.visible_until = now + self.visibility_timeout
            extended = len(due) - len(failed)
            if extended:
                self.service.metrics.inc("worker_visibility_extended_total", extended)
            if failed:
                log.warning("visibility extension refused (message may be handled twice; renders are "
                            "idempotent)", extra={"fields": {"message_ids": sorted(failed)}})

"""Process-local counters and gauges, rendered in the Prometheus text format.

Each gunicorn worker keeps its own; a scraper sees the worker that answers.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self._gauges: dict[str, object] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] += amount

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0)

    def gauge(self, name: str, read) -> None:
        """Register a callable read at exposition time."""
        self._gauges[name] = read

    def render(self) -> str:
        lines = []
        with self._lock:
            items = sorted(self._counters.items())
        for (name, labels), value in items:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"resize_{name}{{{label_text}}} {value:g}" if label_text else f"resize_{name} {value:g}")
        for name, read in sorted(self._gauges.items()):
            lines.append(f"resize_{name} {read():g}")
        return "\n".join(lines) + "\n"

"""The engine interface: bytes and plans in, encoded bytes out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..sniff import ImageHeader
from .geometry import Plan


@dataclass(frozen=True)
class Rendered:
    data: bytes
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Job:
    """One output of a decode: its plan and its format."""

    plan: Plan
    format: str


class Engine(Protocol):
    """Renders images.  Implementations translate their library's errors into ``ResizeError``."""

    def render(self, data: bytes, header: ImageHeader, plan: Plan, output_format: str) -> Rendered: ...

    def render_many(self, data: bytes, header: ImageHeader, jobs: list[Job]) -> list[Rendered]:
        """Every job from one decode of ``data`` (pre-generation renders all presets of an upload so)."""
        ...

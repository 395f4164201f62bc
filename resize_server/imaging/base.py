"""The engine interface: bytes and a plan in, encoded bytes out."""

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


class Engine(Protocol):
    """Renders one image.  Implementations translate their library's errors into ``ResizeError``."""

    def render(self, data: bytes, header: ImageHeader, plan: Plan, output_format: str) -> Rendered: ...

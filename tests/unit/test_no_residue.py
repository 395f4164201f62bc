"""Hundreds of renders in one process leave nothing behind: no temp files, no fds, bounded RSS.

The real ``WandEngine`` (with the resource limits ``create_app`` applies) and
``ResizeService`` render a mix of sources -- 1800x1200 photos in all eight
EXIF orientations, a 12 MP JPEG, CMYK, progressive, PNG with alpha, an
animated GIF, WebP, a truncated JPEG, and corrupt files that make the
decoder raise -- each to a distinct derived key.  The storage keeps only the
size of what it is given, so stored thumbnails do not count as growth.

Run with ``-s`` to see the measured numbers (for SECURITY.md).
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter

import pytest
from wand.image import Image

from resize_server.config import Settings
from resize_server.errors import ResizeError
from resize_server.http import create_app
from resize_server.storage.memory import MemoryStorage
from tests import corpus
from tests.conftest import photo, png_with_alpha

RENDERS = 300
WARM_UP = 30
# Measured: +0.7 to +0.9 MB over the 270 renders after warm-up when large
# allocations are returned to the system (glibc with a fixed M_MMAP_THRESHOLD);
# +30 to +90 MB, and still climbing after 1400 renders, with glibc's default
# dynamic threshold, which keeps freed pixel buffers in fragmented heaps.
RSS_BOUND_MB = 20
FD_BOUND = 0


class SizeOnlyStorage(MemoryStorage):
    """MemoryStorage for sources; derived images are counted and dropped (no growth from keeping them)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored_bytes = 0

    def put(self, obj) -> None:
        with self._lock:
            self.puts += 1
            self.stored_bytes += len(obj.data)


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def twelve_megapixel_jpeg() -> bytes:
    with Image(blob=photo("Landscape_1.jpg")) as img:
        img.resize(4243, 2828)  # 12.0 MP
        img.compression_quality = 85
        return img.make_blob("jpeg")


def sources() -> list[tuple[str, str, bytes, bool]]:
    """(name, extension, bytes, renders) for every kind of source in the mix."""
    out = [(f"photo{n}", "jpg", photo(f"Landscape_{n}.jpg"), True) for n in range(1, 9)]
    out += [(f"portrait{n}", "jpg", photo(f"Portrait_{n}.jpg"), True) for n in (1, 6)]
    out += [
        ("twelve_mp", "jpg", twelve_megapixel_jpeg(), True),
        ("cmyk", "jpg", corpus.cmyk_jpeg(), True),
        ("progressive", "jpg", corpus.progressive_jpeg(), True),
        ("alpha", "png", png_with_alpha(640, 480), True),
        ("palette", "png", corpus.palette_png(), True),
        ("animated", "gif", corpus.animated_gif(), True),
        ("webp", "webp", corpus.webp(), True),
        ("truncated", "jpg", corpus.truncated_jpeg(), True),
        # corrupt: the decoder (or the header check) raises
        ("cut_after_sof", "jpg", corpus.jpeg_cut_after_sof(), False),
        ("png_garbage", "png", corpus.png_header_then_garbage(), False),
        ("gif_no_image", "gif", corpus.gif_header_only(), False),
        ("jpeg_garbage", "jpg", corpus.jpeg_magic_then_garbage(), False),
        ("gif_frame_bomb", "gif", corpus.gif_frame_bomb(), False),
    ]
    return out


SIZES = ["50x50", "100x100", "200x200", "400x400", "800x800", "1024x1024", "200x", "x200",
         "50x50_fill", "100x100_fill", "200x200_fill", "400x400_fill", "800x800_fill", "1024x1024_fill"]


@pytest.fixture
def tmpdir_watch(monkeypatch, tmp_path):
    with corpus.private_tempdir(monkeypatch, tmp_path / "tmp") as path:
        yield path


def test_hundreds_of_renders_leave_no_residue(tmpdir_watch):
    storage = SizeOnlyStorage()
    app = create_app(Settings(bucket="images"), storage=storage)  # the real WandEngine and its limits
    service = app.extensions["resize"]
    kinds = sources()
    for name, ext, data, _ in kinds:
        for copy in range(RENDERS // (len(kinds) * len(SIZES)) + 1):
            storage.add(f"mix/{copy}/{name}.{ext}", data)

    # Round-robin over the sources; each round moves every source to the next
    # size, and a new copy of the sources once all sizes are used: every derived key is new.
    jobs = []
    for i in range(RENDERS):
        name, ext, _, renders = kinds[i % len(kinds)]
        size = SIZES[(i // len(kinds)) % len(SIZES)]
        copy = i // (len(kinds) * len(SIZES))
        jobs.append((f"mix/{copy}/{name}_{size}.{ext}", renders))
    assert len({key for key, _ in jobs}) == RENDERS

    temp_before = corpus.listing(tmpdir_watch)
    outcomes: Counter = Counter()
    started = time.perf_counter()
    rss_start = rss_kb()
    rss_warm = fds_warm = None
    peak = 0
    partial = 0
    for i, (key, renders) in enumerate(jobs):
        if i == WARM_UP:
            assert service.drain(10)
            gc.collect()
            rss_warm, fds_warm = rss_kb(), open_fds()
        try:
            result = service.resize_key(key)
        except ResizeError as exc:
            assert not renders, f"{key}: {exc.status} {exc.detail}"
            assert exc.status in (413, 415, 422), key
            outcomes[exc.status] += 1
        else:
            assert renders, f"{key} rendered but should have failed"
            assert result.data and result.width and result.height
            outcomes[200] += 1
            partial += result.partial
        peak = max(peak, rss_kb())
    assert service.drain(10)
    gc.collect()
    rss_end, fds_end = rss_kb(), open_fds()
    elapsed = time.perf_counter() - started

    growth_mb = (rss_end - rss_warm) / 1024
    print(f"\nno-residue: {RENDERS} renders in {elapsed:.1f}s; outcomes {dict(sorted(outcomes.items()))}; "
          f"stored {storage.puts} thumbnails, {storage.stored_bytes / 1e6:.1f} MB")
    print(f"no-residue: VmRSS start {rss_start / 1024:.1f} MB, after {WARM_UP} warm-up renders "
          f"{rss_warm / 1024:.1f} MB, end {rss_end / 1024:.1f} MB, peak {peak / 1024:.1f} MB; "
          f"growth after warm-up {growth_mb:+.1f} MB (bound {RSS_BOUND_MB} MB)")
    print(f"no-residue: open fds after warm-up {fds_warm}, end {fds_end}; "
          f"temp dir {tmpdir_watch}: {len(temp_before)} entries before, "
          f"{len(corpus.listing(tmpdir_watch))} after")

    assert outcomes[200] == sum(1 for _, renders in jobs if renders)
    assert sum(outcomes[s] for s in (413, 415, 422)) == sum(1 for _, renders in jobs if not renders) > 0
    assert 0 < partial < outcomes[200]  # the corpus holds truncated files: served, never stored
    assert storage.puts == outcomes[200] - partial
    assert corpus.listing(tmpdir_watch) == temp_before
    assert not [name for name in corpus.listing(tmpdir_watch) if name.startswith("magick-")]
    assert fds_end - fds_warm <= FD_BOUND
    assert growth_mb < RSS_BOUND_MB

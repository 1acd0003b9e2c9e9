"""Scenario 13: images that fit the decode budget only one at a time are decoded one at a time.

Two all-zero RGBA images (tiny files, about 100 MiB each decoded, ~500 MiB with a filter's working copies) arrive
at once; without a budget the worker would hold both (~850 MiB). With the default budget its peak RSS growth
stays within ``DECODE_BUDGET_MIB`` plus the bound below, and both jobs are done.
"""

from __future__ import annotations

from PIL import Image

from core.blobs import open_blob_store
from core.imaging import WORKING_COPIES
from core.settings import Settings
from schemas import FilterName
from tests.reliability.conftest import StartWorker
from tests.reliability.harness import count_figures, drain, record_figures
from tests.reliability.hostile import memory_of
from tests.support.events import as_record, blob_event
from tests.support.image_server import ImageServer
from tests.support.images import encoded
from tests.support.worker import eventually, produce

SIDE_PX = 5100  # 5100 x 5100 x 4 bands x WORKING_COPIES: just under the default budget of 512 MiB
OVER_BUDGET_MIB = 150  # the worker's own growth while it works: buffers, the PNG encoder, the result


async def test_two_near_budget_images_at_once_stay_within_the_decode_budget(
    reliability_settings: Settings, images: ImageServer, start_worker: StartWorker
) -> None:
    settings = reliability_settings
    budget_mib = settings.decode_budget_mib
    assert SIDE_PX * SIDE_PX * 4 * WORKING_COPIES <= budget_mib * 2**20 < 2 * SIDE_PX * SIDE_PX * 4 * WORKING_COPIES
    blobs = open_blob_store(settings)
    zeros = encoded(Image.new("RGBA", (SIDE_PX, SIDE_PX)))
    events = [await blob_event(blobs, zeros, FilterName.BLUR) for _ in range(2)]
    worker = start_worker(settings)
    await eventually(lambda: _log_says(worker.log(), "assigned ['"), what="the worker joined its group")
    before = memory_of(worker.process.pid)

    await produce(settings, [as_record(event) for event in events])
    drain_s = await drain(settings, [str(event.image_id) for event in events], timeout_s=180)
    peak = memory_of(worker.process.pid)

    growth_mib = (peak.peak_rss_kib - before.rss_kib) / 1024
    figures = await count_figures(settings, [str(event.image_id) for event in events], images, drain_s=drain_s)
    line = record_figures(
        "decode-budget",
        figures,
        image_px=f"{SIDE_PX}x{SIDE_PX}",
        png_kib=len(zeros) // 1024,
        budget_mib=budget_mib,
        peak_rss_growth_mib=round(growth_mib),
        bound_mib=budget_mib + OVER_BUDGET_MIB,
    )
    assert figures.done == 2, line
    assert growth_mib <= budget_mib + OVER_BUDGET_MIB, line


async def _log_says(log: str, text: str) -> bool:
    return text in log

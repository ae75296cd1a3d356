"""Differential conformance: each protocol scenario runs against AWS's Runtime Interface Emulator
and against ``capture-ext local --rie`` at the same time, and what the probe extension, the
handler and the caller observed must be the same (docs/emulator.md, "RIE mode").

Skipped, with the reason, where the RIE binary is absent (``CAPTURE_RIE_BINARY``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.fixtures.conformance import (
    KNOWN_DIFFERENCES,
    RIE_MISSING,
    SCENARIOS,
    emulator_starter,
    observe,
    rie_binary,
    start_rie,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(rie_binary() is None, reason=RIE_MISSING)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_rie_mode_behaves_as_aws_rie(scenario: str, tmp_path: Path) -> None:
    real, ours = await asyncio.gather(
        observe(start_rie, scenario, tmp_path / "rie"),
        observe(emulator_starter("--rie"), scenario, tmp_path / "emulator"),
    )

    assert real.keys() == ours.keys()
    differing = {key: (real[key], ours[key]) for key in real if real[key] != ours[key]}
    unexplained = {k: v for k, v in differing.items() if k not in KNOWN_DIFFERENCES}
    assert unexplained == {}, f"(AWS RIE, --rie) differ: {unexplained}"
    stale = [k for k in KNOWN_DIFFERENCES if k in real and k not in differing]
    assert stale == [], f"no longer differ, drop from KNOWN_DIFFERENCES and the docs: {stale}"

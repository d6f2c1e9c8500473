"""The profiler's real output is accepted by the EdgeProfile CRD on a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer
from edgespec.api.profile import EdgeProfile
from edgespec_edge.loop import VerifierClient
from edgespec_edge.power import NominalSensor
from edgespec_edge.profiler import DraftUnderTest, load_prompts, measure_draft, write_yaml

from .conftest import DRAFT, THREADS, TOKEN

pytestmark = [pytest.mark.models, pytest.mark.cluster]

CRD = Path(__file__).resolve().parents[2] / "crds" / "edgespec.dev_edgeprofiles.yaml"


@pytest.fixture
async def measured_profile(verifier: TestServer, draft_file: Path, tmp_path: Path) -> Path:
    client = VerifierClient(str(verifier.make_url("")), TOKEN)
    try:
        measured = await measure_draft(
            DraftUnderTest(DRAFT, "Q4_K_M", draft_file),
            client=client,
            prompts=load_prompts(limit=2),
            ks=[1, 2, 4],
            device_class="ci-x86",
            target_model="gemma3-270m",
            sensor=NominalSensor(15.0),
            speed_tokens=12,
            acceptance_tokens=12,
            n_threads=THREADS,
        )
    finally:
        await client.close()
    profile = measured.profile
    out = tmp_path / "profiles.yaml"
    write_yaml([profile], out)
    return out


async def test_profiler_output_is_accepted_by_the_crd(cluster: Any, measured_profile: Path) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/edgeprofiles.edgespec.dev", "--timeout=60s")
    document = measured_profile.read_text()
    cluster.kubectl("apply", "--server-side", "--field-manager=edgespec-profiler", "-f", "-", input=document)
    name = yaml.safe_load(document)["metadata"]["name"]
    stored = yaml.safe_load(cluster.kubectl("get", "edgeprofile", name, "-o", "yaml").stdout)
    profile = EdgeProfile.model_validate(stored)
    assert profile.spec.draft_model == DRAFT
    assert [p.k for p in profile.spec.acceptance] == [1, 2, 4]
    assert profile.spec.draft_tokens_per_s > 0
    assert profile.spec.power_source == "nominal"

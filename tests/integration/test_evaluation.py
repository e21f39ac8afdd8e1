"""The evaluation harness, run the way a developer runs it, on its CI subset against the real service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import evaluate
from benchmarks.evalset import select
from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.integration.conftest import Service, deploy, undeploy

pytestmark = pytest.mark.integration

SYSTEMS = ("baseline", "librosa", "service/none", "service/hpss", "oracle")
# The CI subset is three short pieces (~170 reference notes): one or two notes more or less move a
# piece's F1 by about 0.01, and basic-pitch's ONNX output differs in the last digits between CPUs.
# A service that transcribes the mix as well as basic-pitch alone stays within 0.02 of it; one that
# loses or shifts notes (wrong rate, cleaning that drops real notes) falls well below.
F1_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-evaluation")),
        demucs_model=DEFAULT_TEST_MODEL, demucs_model_dir=str(model_dir),
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def evaluation(service: Service, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("evaluation")
    cache = tmp_path_factory.mktemp("evalset")
    report = evaluate.main([
        "--subset", "ci", "--url", service.url, "--separations", "none,hpss",
        "--out", str(out), "--cache", str(cache),
    ])  # fmt: skip
    return report, out


def test_the_tables_are_written_with_every_system(evaluation) -> None:
    _, out = evaluation
    markdown = (out / "evaluation.md").read_text()
    written = json.loads((out / "evaluation.json").read_text())
    for system in SYSTEMS:
        assert f"| {system} |" in markdown, f"no row for {system}"
    assert tuple(written["systems"]) == SYSTEMS
    assert "## Against the baseline" in markdown and "note F1:" in markdown
    assert "## Against librosa's beat tracker" in markdown and "beat F1:" in markdown
    assert "## Quality bars" in markdown
    assert written["header"]["commit"] and written["header"]["machine"]


def test_every_piece_got_scored_by_every_system(evaluation) -> None:
    report, _ = evaluation
    assert set(report["pieces"]) == {p.name for p in select("ci")}
    for piece, row in report["pieces"].items():
        assert set(row["systems"]) == set(SYSTEMS), piece
        for system, score in row["systems"].items():
            assert score["error"] is None, f"{system} on {piece}: {score['error']}"
            if system == "librosa":  # beats and tempo only: no notes, downbeats or meter to score
                assert score["notes"] is None and score["downbeat_f1"] is None and score["meter"] is None
                assert score["beat_f1"] is not None and score["tempo"]["est"] > 0
                continue
            assert score["notes"] is not None and score["notes"]["n_est"] > 0, f"{system} found no notes in {piece}"


def test_the_service_without_separation_is_no_worse_than_basic_pitch(evaluation) -> None:
    report, _ = evaluation
    service = report["systems"]["service/none"]["all"]["note_f1"]
    baseline = report["systems"]["baseline"]["all"]["note_f1"]
    assert service >= baseline - F1_TOLERANCE, f"service/none note F1 {service:.3f} < basic-pitch {baseline:.3f}"


def test_tempo_is_right_on_every_subset_piece(evaluation) -> None:
    report, _ = evaluation
    for piece, row in report["pieces"].items():
        for system in ("service/none", "service/hpss"):
            tempo = row["systems"][system]["tempo"]
            assert tempo["correct"], f"{system} on {piece}: {tempo['est']} BPM for {tempo['ref']} BPM"


def test_drums_are_transcribed_where_the_mix_has_drums(evaluation) -> None:
    report, _ = evaluation
    for piece, row in report["pieces"].items():
        drums = row["systems"]["service/hpss"]["drums"]
        if "drums" in row["truth"]["notes"]:
            assert drums is not None and drums["kick"] is not None and drums["kick"]["n_est"] > 0, piece
        else:
            assert drums is None, piece

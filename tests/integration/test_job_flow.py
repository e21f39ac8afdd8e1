"""A song goes in, MIDI comes out: the whole flow on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import mir_eval
import numpy as np
import pretty_midi
import pytest
import soundfile

from deployments.demucs_models import DEFAULT_TEST_MODEL
from tests.integration.conftest import Service, deploy, undeploy
from tests.music import melody, render

pytestmark = pytest.mark.integration

MAX_CONCURRENT_JOBS = 2


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, serve_url: str, model_dir: Path, tmp_path_factory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    database_url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    svc = deploy(
        serve_url, data_dir=str(data_dir), database_url=database_url, demucs_model=DEFAULT_TEST_MODEL,
        demucs_model_dir=str(model_dir), max_concurrent_jobs=MAX_CONCURRENT_JOBS,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def piano(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pretty_midi.PrettyMIDI]:
    truth = melody(program=0, seconds=10.0)
    return render(truth, tmp_path_factory.mktemp("audio") / "piano.wav"), truth


def _intervals_and_pitches(notes: list) -> tuple[np.ndarray, np.ndarray]:
    intervals = np.array([[n.start, n.end] for n in notes]).reshape(-1, 2)
    pitches = np.array([pretty_midi.note_number_to_hz(n.pitch) for n in notes])
    return intervals, pitches


def test_health_reports_database_and_models_ready(service: Service) -> None:
    health = service.client.get("/api/v1/health").json()
    assert health["ready"], health
    expected = "sqlite" if not service.settings["database_url"] else "postgresql"
    assert health["components"]["database"]["detail"]["backend"] == expected
    assert health["components"]["separation"]["detail"]["model"] == DEFAULT_TEST_MODEL
    assert health["components"]["separation"]["detail"]["device"] == "cpu"  # no CUDA here: CPU fallback
    assert service.client.get("/api/v1/health/ready").status_code == 200


def test_whole_mix_transcription_matches_the_score(service: Service, piano) -> None:
    path, truth = piano
    response = service.submit(path, separation="none")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert response.headers["location"].endswith(f"/api/v1/jobs/{accepted['job_id']}")

    job = service.wait(accepted["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 100.0
    seen = service.seen_progress[accepted["job_id"]]
    assert seen == sorted(seen), "progress went backwards"
    assert {r["name"] for r in job["results"]} == {
        "transcription.mid", "notes.json", "midi/mix.mid", "stems/mix.wav",
    }  # fmt: skip

    midi = pretty_midi.PrettyMIDI(io.BytesIO(service.result(job, "transcription.mid")))
    assert [inst.name for inst in midi.instruments] == ["mix"]
    ref_i, ref_p = _intervals_and_pitches(truth.instruments[0].notes)
    est_i, est_p = _intervals_and_pitches(midi.instruments[0].notes)
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(ref_i, ref_p, est_i, est_p, offset_ratio=None)
    # basic-pitch scores about 0.94 on this rendered solo piano (the same as running it directly);
    # 0.8 leaves room for numerical noise yet fails on shifted times, a wrong rate or lost notes.
    assert f1 >= 0.8, f"note-onset F1 {f1:.3f}"

    notes = json.loads(service.result(job, "notes.json"))
    assert len(notes) == len(midi.instruments[0].notes)
    assert {"stem", "start", "end", "pitch", "velocity", "pitch_bends"} <= set(notes[0])
    assert all(n["stem"] == "mix" and 0 <= n["start"] < n["end"] for n in notes)
    per_stem = pretty_midi.PrettyMIDI(io.BytesIO(service.result(job, "midi/mix.mid")))
    assert len(per_stem.instruments[0].notes) == len(notes)


def test_demucs_stems_keep_the_input_length_and_rate(service: Service, tmp_path: Path) -> None:
    # 48 kHz input: Demucs runs at 44.1 kHz, and the stems must come back at the input's rate.
    path = render(melody(program=33, seconds=6.0), tmp_path / "bass48k.wav", sample_rate=48000)
    input_info = soundfile.info(str(path))
    response = service.submit(path, separation="demucs", onset_threshold="0.6")
    assert response.status_code == 202, response.text
    job = service.wait(response.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["options"]["notes"]["onset_threshold"] == 0.6
    assert set(job["stage_seconds"]) == {"decoding", "separating", "transcribing", "packaging"}

    for stem in ("drums", "bass", "other", "vocals"):
        info = soundfile.info(io.BytesIO(service.result(job, f"stems/{stem}.wav")))
        assert (info.samplerate, info.frames, info.channels) == (48000, input_info.frames, input_info.channels)

    midi = pretty_midi.PrettyMIDI(io.BytesIO(service.result(job, "transcription.mid")))
    tracks = {inst.name: inst.program for inst in midi.instruments}
    assert tracks == {"vocals": 53, "bass": 33, "other": 0}  # drums stay out of the MIDI for now
    for stem in ("vocals", "bass", "other"):
        per_stem = pretty_midi.PrettyMIDI(io.BytesIO(service.result(job, f"midi/{stem}.mid")))
        assert [inst.name for inst in per_stem.instruments] == [stem]


def test_jobs_beyond_the_concurrency_limit_wait_in_the_queue(service: Service, piano) -> None:
    path, _ = piano
    responses = [service.submit(path, separation="none") for _ in range(MAX_CONCURRENT_JOBS + 3)]
    assert [r.status_code for r in responses] == [202] * len(responses)
    jobs = [service.wait(r.json()["job_id"]) for r in responses]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(jobs)
    # At no moment were more jobs running than the limit allows.
    events = sorted(
        [(j["started_at"], 1) for j in jobs] + [(j["finished_at"], -1) for j in jobs], key=lambda e: (e[0], e[1])
    )
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 1 <= peak <= MAX_CONCURRENT_JOBS

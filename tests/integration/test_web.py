"""The web page in a real browser (Debian's headless chromium, driven by Playwright) against the live
service with authentication on: the key goes into session storage, a rendered piece is dropped on the page,
its progress follows the WebSocket to 100, the piano roll draws one colour per stem (toggles and zoom
work), a soloed stem plays, a clicked note sounds, and transcription.mid downloads and parses; a file that is
not audio gets the service's own sentence. With authentication off (the laptop's way) and the WebSocket
blocked, the page polls, plays the stems from their URLs and downloads through plain links.

Screenshots go to test-artifacts/web/ (ignored by git); with STEMSCRIBE_DOCS_SCREENSHOT=1 the result
view is also written to docs/web-page.png, the README's picture."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pretty_midi
import pytest

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.integration.conftest import Service, deploy, undeploy
from tests.music import ensemble, render

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "web"
CHROMIUM = Path(os.environ.get("STEMSCRIBE_CHROMIUM", "/usr/bin/chromium"))
KEY = "ssk_web-page-test-key-0123456789"
# hpss needs no model: two stems, drums and harmonic, in seconds.
STEMS = ["drums", "harmonic"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (dev extras)")
if not CHROMIUM.is_file():
    pytest.skip(f"no chromium at {CHROMIUM}; install Debian's chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-web")), demucs_model=DEFAULT_TEST_MODEL,
        demucs_model_dir=str(model_dir), auth_required=True, api_keys=KEY,
    )  # fmt: skip
    yield svc
    undeploy(svc)


@pytest.fixture(scope="module")
def piece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Piano, bass, strings and drums: both hpss stems get notes.
    return render(ensemble(seconds=10.0), tmp_path_factory.mktemp("audio-web") / "band.wav")


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught exceptions of the page's scripts and refusals by its Content-Security-Policy; every test
    ends by asserting there were none."""
    return []


@pytest.fixture
def page(page_errors: list[str]) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                # The players start from a click anyway; this keeps a slow click from racing the policy.
                "--autoplay-policy=no-user-gesture-required",
            ],
        )  # fmt: skip
        context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        # A request the page's Content-Security-Policy refuses shows up only on the console.
        page.on(
            "console",
            lambda msg: page_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        yield page
        context.close()
        browser.close()


def _shot(page: Any, tmp_path: Path, name: str, full_page: bool = False) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def _docs_screenshot(page: Any) -> None:
    """The README's picture, in a palette of 128 colours so that it stays small in git."""
    from PIL import Image  # only here: Pillow comes with music21 (matplotlib); nothing else here needs it

    raw = ARTIFACTS / "docs-web-page.png"
    page.locator("body").screenshot(path=str(raw))
    image = Image.open(raw).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    image.save(REPO / "docs" / "web-page.png", optimize=True)


def _drop_file(page: Any, path: Path) -> None:
    """A drop event on the drop zone, carrying the file in a DataTransfer as a drag from the desktop does."""
    data = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "audio/wav" }));
            return transfer;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": data})


# How many pixels of the canvas carry each stem's colour (notes are drawn at 55-100 % opacity over the
# light background, so a pixel counts when it is the colour blended with white, with a little slack).
_COLOUR_PIXELS = """() => {
    const { roll } = window.stemscribe;
    const canvas = roll.canvas;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const counts = {};
    for (const [stem, hex] of Object.entries(roll.colours)) {
        const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        let n = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            const alphas = [];
            let ok = true;
            for (let k = 0; k < 3; k++) {
                const span = 255 - c[k];
                if (span < 40) { ok = ok && Math.abs(pixels[i + k] - c[k]) < 20; continue; }
                alphas.push((255 - pixels[i + k]) / span);
            }
            if (ok && alphas.length && Math.max(...alphas) - Math.min(...alphas) < 0.08 && Math.min(...alphas) > 0.45) n++;
        }
        counts[stem] = n;
    }
    return counts;
}"""


def test_from_upload_to_piano_roll_players_and_downloads(
    service: Service, piece: Path, page: Any, page_errors: list[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    page.goto(f"{service.url}/")
    # Authentication is on and no key is set yet: the page loads, the API refuses, the page says why.
    sync_api.expect(page.locator("#jobs-error")).to_contain_text("API key")

    page.fill("#api-key", KEY)
    page.click("#key-form button")
    assert page.evaluate("sessionStorage.getItem('stemscribe.apiKey')") == KEY
    page.reload()
    assert page.input_value("#api-key") == KEY  # kept for the tab, not typed again
    sync_api.expect(page.locator("#jobs-error")).to_be_empty()

    _drop_file(page, piece)
    sync_api.expect(page.locator("#picked")).to_contain_text(piece.name)
    page.select_option("#separation", "hpss")
    page.select_option("#quantize-grid", "1/8")
    _shot(page, tmp_path, "1-picked")
    page.click("#submit")

    # Progress, as the page shows it, until the job is final.
    row = page.locator("#progress li").first
    seen: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = row.get_attribute("data-status")
        progress = int(row.get_attribute("data-progress") or 0)
        if not seen or seen[-1] != progress:
            seen.append(progress)
            if 0 < progress < 100 and not (tmp_path / "2-progress.png").exists():
                _shot(page, tmp_path, "2-progress")
        if status in ("succeeded", "failed", "canceled", "error"):
            break
        time.sleep(0.05)
    assert row.get_attribute("data-status") == "succeeded", row.inner_text()
    assert row.get_attribute("data-source") == "websocket"  # live, not polled
    assert seen[-1] == 100 and seen == sorted(seen) and len(seen) >= 2, seen
    job_id = row.get_attribute("data-job-id")
    logger.info("job %s finished after %.1f s in the browser; progress seen %s", job_id, time.monotonic() - started, seen)

    # The result view: one toggle, one colour and one player per stem, plus the original.
    result = page.locator("#result")
    sync_api.expect(result).to_be_visible()
    sync_api.expect(result).to_have_attribute("data-players", str(len(STEMS) + 1))
    # As many stems as the job has, by the API's own answer.
    job = service.client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": KEY}).json()
    api_stems = sorted(r["name"][len("stems/") : -len(".wav")] for r in job["results"] if r["name"].startswith("stems/"))
    assert api_stems == STEMS, job["results"]
    roll = page.locator("#roll")
    assert roll.get_attribute("data-stems").split(",") == STEMS
    assert roll.get_attribute("data-drawn-stems").split(",") == STEMS
    assert int(roll.get_attribute("data-drawn-notes")) > 10
    assert page.locator("#stem-toggles input").count() == len(STEMS)
    colours = page.evaluate("() => window.stemscribe.roll.colours")
    assert len(set(colours.values())) == len(STEMS)
    pixels = page.evaluate(_COLOUR_PIXELS)
    assert all(pixels[stem] > 200 for stem in STEMS), pixels
    # Bar lines and beats come from notes.json, and the bars are numbered as its notes (and a DAW) count them.
    doc = page.evaluate("() => window.stemscribe.roll.doc")
    downbeats = doc["downbeats"]
    assert doc["beats"] and downbeats
    first_bar = int(roll.get_attribute("data-first-bar"))
    inside = [n for n in doc["notes"] if n["start"] > downbeats[0] and min(abs(n["start"] - d) for d in downbeats) > 0.05]
    assert inside
    for note in inside:
        assert note["bar"] == first_bar + sum(d <= note["start"] for d in downbeats) - 1, (note, first_bar)
    _shot(page, tmp_path, "3-result", full_page=True)
    if os.environ.get("STEMSCRIBE_DOCS_SCREENSHOT") == "1":
        _docs_screenshot(page)

    # Hiding a stem takes its colour off the roll; showing it brings it back.
    page.uncheck("#stem-toggles input[data-stem='drums']")
    hidden = page.evaluate(_COLOUR_PIXELS)
    assert hidden["drums"] == 0 and hidden["harmonic"] > 200, hidden
    assert roll.get_attribute("data-drawn-stems") == "harmonic"
    page.check("#stem-toggles input[data-stem='drums']")
    assert roll.get_attribute("data-drawn-stems").split(",") == STEMS

    # Zoom.
    before = float(roll.get_attribute("data-px-per-second"))
    page.click("#zoom-in")
    assert float(roll.get_attribute("data-px-per-second")) == pytest.approx(before * 1.5)
    page.click("#zoom-out")

    # Solo a stem and play: it advances, unmuted, while the other stem is silent.
    page.click("tr[data-player='harmonic'] button.solo")
    page.click("#play-all")
    page.wait_for_function(
        """() => { const a = document.querySelector("audio[data-stem='harmonic']");
                   return !a.paused && a.currentTime > 0.5; }"""
    )
    assert page.evaluate("document.querySelector(\"audio[data-stem='harmonic']\").muted") is False
    assert page.evaluate("document.querySelector(\"audio[data-stem='drums']\").muted") is True
    assert page.inner_text("#clock") != "0:00.0"
    _shot(page, tmp_path, "4-playing")
    page.click("#play-all")  # pause
    assert page.evaluate("document.querySelector(\"audio[data-stem='harmonic']\").paused") is True

    # Click a note on the roll: that note's pitch sounds.
    page.evaluate("() => window.stemscribe.players.seek(0)")
    page.locator("#roll-scroll").evaluate("(el) => { el.scrollLeft = 0; }")
    target = page.evaluate(
        """() => { const { roll } = window.stemscribe;
                   const box = roll.canvas.getBoundingClientRect();
                   const note = roll.notes.find((n) => n.stem === "harmonic" && n.end - n.start > 0.2 &&
                       roll.notePosition(n).x > box.left + 40 && roll.notePosition(n).x < box.right - 10);
                   const at = roll.notePosition(note);
                   return { note, at: { x: at.x - box.left, y: at.y - box.top } }; }"""
    )
    # Relative to the canvas, so a page still scrolling to the result cannot move the target.
    page.locator("#roll").click(position=target["at"])
    tone = page.evaluate("() => window.stemscribe.state.lastTone")
    assert tone["stem"] == "harmonic", (tone, target)
    assert tone["frequency"] == pytest.approx(440 * 2 ** ((tone["pitch"] - 69) / 12))

    # Every result has a link; transcription.mid downloads (fetched with the key) and parses.
    links = page.locator("#downloads a")
    names = [links.nth(i).get_attribute("data-result") for i in range(links.count())]
    assert {"transcription.mid", "transcription.quantized.mid", "notes.json", "stems/drums.wav"} <= set(names)
    with page.expect_download() as download_info:
        page.click("#downloads a[data-result='transcription.mid']")
    download = download_info.value
    assert download.suggested_filename == "transcription.mid"
    saved = tmp_path / "transcription.mid"
    download.save_as(str(saved))
    midi = pretty_midi.PrettyMIDI(str(saved))
    assert sorted(i.name for i in midi.instruments) == STEMS
    assert sum(len(i.notes) for i in midi.instruments) == len(doc["notes"])

    # The key's job list has it.
    page.click("#refresh-jobs")
    sync_api.expect(page.locator(f"#jobs tr[data-job-id='{job_id}']")).to_have_attribute("data-status", "succeeded")

    # Something that is not audio: the service's own sentence reaches the page, and the row has no job.
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("not a song\n" * 100)
    page.set_input_files("#file-input", str(not_audio))
    page.click("#submit")
    sync_api.expect(page.locator("#upload-error")).to_contain_text("not audio")
    refused = page.locator("#progress li").first
    sync_api.expect(refused).to_have_attribute("data-status", "error")
    assert refused.get_attribute("data-job-id") is None
    assert page_errors == []
    logger.info("browser test took %.1f s", time.monotonic() - started)



@pytest.fixture
def open_service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The laptop's way, authentication off; last in this file, as it replaces the module's deployment."""
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-web-open")), demucs_model=DEFAULT_TEST_MODEL,
        demucs_model_dir=str(model_dir), auth_required=False,
    )  # fmt: skip
    yield svc
    undeploy(svc)


def test_without_a_key_or_a_websocket_the_page_polls_and_links_the_results(
    open_service: Service, piece: Path, page: Any, page_errors: list[str], tmp_path: Path
) -> None:
    # A proxy that does not pass WebSockets, played by Playwright: every socket to /ws/ is closed at once.
    page.route_web_socket("**/ws/jobs/**", lambda ws: ws.close())
    page.goto(f"{open_service.url}/")
    sync_api.expect(page.locator("#key-state")).to_have_text("no key")
    sync_api.expect(page.locator("#jobs-error")).to_be_empty()
    page.set_input_files("#file-input", str(piece))
    page.select_option("#separation", "none")
    page.click("#submit")
    row = page.locator("#progress li").first
    sync_api.expect(row).to_have_attribute("data-status", "succeeded", timeout=180_000)
    assert row.get_attribute("data-source") == "poll"
    assert row.get_attribute("data-progress") == "100"
    sync_api.expect(page.locator("#roll")).to_have_attribute("data-stems", "mix")
    sync_api.expect(page.locator("#result")).to_have_attribute("data-players", "2")

    # Without a key the players stream the result URLs themselves, and the links are plain links.
    stem = page.locator("audio[data-stem='mix']")
    assert stem.evaluate("(a) => a.src").startswith(f"{open_service.url}/api/v1/jobs/")
    page.click("#play-all")
    page.wait_for_function("() => document.querySelector(\"audio[data-stem='mix']\").currentTime > 0.3")
    page.click("#play-all")
    with page.expect_download() as download_info:
        page.click("#downloads a[data-result='transcription.mid']")
    saved = tmp_path / "transcription.mid"
    download_info.value.save_as(str(saved))
    assert [i.name for i in pretty_midi.PrettyMIDI(str(saved)).instruments] == ["mix"]
    _shot(page, tmp_path, "5-open")
    assert page_errors == []

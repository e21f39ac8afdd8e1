"""`stemscribe` on the command line: transcribe songs, manage jobs, start the laptop service.

`make-test-model` and `keys` (offline model setup, API keys in the database) are the service's own
commands (serve_app.cli); they stay under the same `stemscribe` entry point."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from stemscribe_client import _common
from stemscribe_client.aio import AsyncClient
from stemscribe_client.client import Client
from stemscribe_client.errors import ApiError, ServiceUnreachable, StemscribeClientError, Unauthorized
from stemscribe_client.models import Job, JobEvent

# Exit codes (README, "Command line and Python client").
EXIT_OK = 0
EXIT_FAILED = 1  # a job failed or was canceled, a file was refused, a job was not found
EXIT_USAGE = 2  # Click's own: a bad option, a file that does not exist
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="stemscribe", help="Songs in; stems, multi-track MIDI and notes out: the stemscribe service's command line.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)  # fmt: skip
jobs_app = typer.Typer(help="List, show, cancel, delete and download jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


class Separation(StrEnum):
    demucs = "demucs"
    hpss = "hpss"
    none = "none"


class Grid(StrEnum):
    quarter = "1/4"
    eighth = "1/8"
    eighth_triplet = "1/8t"
    sixteenth = "1/16"
    sixteenth_triplet = "1/16t"
    thirty_second = "1/32"


UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar=_common.URL_ENV, help=f"The service (default {_common.DEFAULT_URL}).",
                 show_default=False),
]  # fmt: skip
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar=_common.KEY_ENV, help="API key (X-API-Key).", show_default=False),
]


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _out() -> Console:
    return Console(highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    _err().print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _explain(exc: StemscribeClientError, what: str = "") -> tuple[str, int]:
    """A sentence for a person, and the exit code."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, ServiceUnreachable):
        return (
            f"cannot reach the stemscribe service at {exc.url} ({exc.reason}). Is it running? "
            "`stemscribe serve` starts one on this machine; --url or STEMSCRIBE_URL points elsewhere.",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, Unauthorized):
        return (
            f"the service refused the API key (401 {exc.code}): {exc.detail} "
            "Pass --api-key or set STEMSCRIBE_API_KEY (`stemscribe keys create NAME` makes one).",
            EXIT_UNAUTHORIZED,
        )
    if isinstance(exc, ApiError):
        hint = f" Try again in {exc.retry_after:g} s." if exc.retry_after and exc.status in (429, 503) else ""
        return f"{prefix}{exc.detail} ({exc.status} {exc.code}){hint}", EXIT_FAILED
    return f"{prefix}{exc}", EXIT_FAILED


@contextmanager
def _friendly_errors() -> Iterator[None]:
    try:
        yield
    except StemscribeClientError as exc:
        message, code = _explain(exc)
        raise _fail(message, code) from None


# -- transcribe -------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    path: Path
    folder: Path
    job_id: str | None = None
    job: Job | None = None
    error: str | None = None
    files: list[Path] = field(default_factory=list)
    notes_per_stem: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.job is not None and self.job.status == "succeeded" and self.error is None


def _folders(paths: list[Path], out: Path) -> list[Path]:
    """out/<song>/ for each file; a second song.wav (from another folder) gets out/song-2/."""
    seen: Counter[str] = Counter()
    folders = []
    for path in paths:
        seen[path.stem] += 1
        name = path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}"
        folders.append(out / name)
    return folders


class _MarkColumn(SpinnerColumn):
    """A spinner while the file is on its way; then a tick or a cross."""

    def render(self, task):  # type: ignore[no-untyped-def]
        mark = task.fields.get("mark")
        return Text.from_markup(mark) if mark else super().render(task)


def _stage_text(event: JobEvent) -> str:
    if event.status in ("queued", "running"):
        return event.stage
    return event.status


async def _one(
    client: AsyncClient, outcome: _Outcome, options: dict[str, Any], progress: Progress, task: TaskID,
    submitted: list[str],
) -> None:  # fmt: skip
    try:
        accepted = await client.submit(outcome.path, **options)
    except (ServiceUnreachable, Unauthorized):
        raise  # nothing else will work either
    except ApiError as exc:
        outcome.error = _explain(exc)[0]
        progress.update(task, stage=f"refused ({exc.status})", mark="[red]✗[/]")
        return
    outcome.job_id = accepted.job_id
    submitted.append(accepted.job_id)
    progress.update(task, stage="queued")

    def on_event(event: JobEvent) -> None:
        progress.update(task, completed=event.progress, stage=_stage_text(event))

    job = await client.wait(accepted, on_event=on_event)
    outcome.job = job
    if job.status != "succeeded":
        outcome.error = f"the job {job.status}" + (f": {job.error}" if job.error else "")
        progress.update(task, stage=job.status, mark="[red]✗[/]")
        return
    progress.update(task, stage="downloading")
    outcome.files = await client.download(job, outcome.folder)
    notes_file = outcome.folder / "notes.json"
    if notes_file.is_file():
        notes = json.loads(notes_file.read_text()).get("notes", [])
        outcome.notes_per_stem = dict(Counter(str(n.get("stem")) for n in notes))
    progress.update(task, completed=100, stage="done", mark="[green]✓[/]")


async def _run_all(
    outcomes: list[_Outcome], options: dict[str, Any], url: str | None, api_key: str | None, progress: Progress,
    submitted: list[str],
) -> None:  # fmt: skip
    async with AsyncClient(url, api_key) as client:
        async with asyncio.TaskGroup() as group:
            for outcome in outcomes:
                task = progress.add_task(outcome.path.name, total=100, stage="uploading", mark="")
                group.create_task(_one(client, outcome, options, progress, task, submitted))


def _run(
    outcomes: list[_Outcome], options: dict[str, Any], url: str | None, api_key: str | None, progress: Progress,
    submitted: list[str],
) -> StemscribeClientError | None:  # fmt: skip
    """Every file at once; the error that stopped them all (unreachable, 401), if one did."""
    fatal: list[StemscribeClientError] = []
    try:
        asyncio.run(_run_all(outcomes, options, url, api_key, progress, submitted))
    except* StemscribeClientError as group:
        fatal.extend(group.exceptions)  # type: ignore[arg-type]
    return fatal[0] if fatal else None


def _summary(outcomes: list[_Outcome]) -> Table:
    table = Table(title="stemscribe", title_justify="left")
    for column in ("song", "result", "tempo", "key", "meter", "notes per stem"):
        table.add_column(column)
    for o in outcomes:
        if not o.ok:
            table.add_row(o.path.name, "[red]failed[/]" if o.job else "[red]refused[/]", "", "", "", "")
            continue
        assert o.job is not None
        a = o.job.analysis
        tempo = f"{a.tempo_bpm:.1f} BPM" if a and a.tempo_bpm else "-"
        notes = "\n".join(f"{stem} {count}" for stem, count in sorted(o.notes_per_stem.items())) or "no notes"
        table.add_row(
            o.path.name, "[green]done[/]", tempo, (a.key if a else None) or "-",
            (a.time_signature if a else None) or "-", notes,
        )  # fmt: skip
    return table


def _cancel_all(job_ids: list[str], url: str | None, api_key: str | None) -> None:
    err = _err()
    if not job_ids:
        return
    try:
        with Client(url, api_key, retries=1, timeout=10) as client:
            for job_id in job_ids:
                job = client.cancel(job_id)
                err.print(f"job {job_id} ({job.upload_name}): {job.status}")
    except StemscribeClientError as exc:
        err.print(f"could not cancel every job: {_explain(exc)[0]}")


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="Audio files.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Results go to OUTPUT/<song>/.")] = Path("."),
    separation: Annotated[
        Separation | None, typer.Option(help="demucs (4 stems), hpss (no model: drums, harmonic), none (the mix).")
    ] = None,
    onset_threshold: Annotated[float | None, typer.Option(help="0..1, every pitched stem.")] = None,
    frame_threshold: Annotated[float | None, typer.Option(help="0..1, every pitched stem.")] = None,
    minimum_note_length_ms: Annotated[float | None, typer.Option(help="10..2000 ms.")] = None,
    minimum_frequency: Annotated[float | None, typer.Option(help="Hz, 27.5..4186.")] = None,
    maximum_frequency: Annotated[float | None, typer.Option(help="Hz, 27.5..4186.")] = None,
    clean_ghost_notes: Annotated[
        bool | None, typer.Option("--clean-ghost-notes/--keep-ghost-notes", help="Drop short, quiet notes.")
    ] = None,
    clean_octave_duplicates: Annotated[
        bool | None,
        typer.Option("--clean-octave-duplicates/--keep-octave-duplicates", help="Drop quieter octave doublings."),
    ] = None,
    quantize: Annotated[Grid | None, typer.Option(help="Grid of transcription.quantized.mid (default 1/16).")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload songs, follow each job live, download every result into OUTPUT/<song>/ and sum them up.
    Ctrl-C asks the service to cancel the jobs."""
    options = {
        "separation": separation, "onset_threshold": onset_threshold, "frame_threshold": frame_threshold,
        "minimum_note_length_ms": minimum_note_length_ms, "minimum_frequency": minimum_frequency,
        "maximum_frequency": maximum_frequency, "clean_ghost_notes": clean_ghost_notes,
        "clean_octave_duplicates": clean_octave_duplicates, "quantize_grid": quantize,
    }  # fmt: skip
    outcomes = [_Outcome(path, folder) for path, folder in zip(files, _folders(files, output), strict=True)]
    submitted: list[str] = []
    err = _err()
    progress = Progress(
        _MarkColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[stage]}"), TimeElapsedColumn(), console=err,
    )  # fmt: skip
    try:
        with progress:
            fatal = _run(outcomes, options, url, api_key, progress, submitted)
    except KeyboardInterrupt:
        unfinished = [o.job_id for o in outcomes if o.job_id and (o.job is None or not o.job.is_final)]
        err.print("interrupted: asking the service to cancel the jobs")
        _cancel_all(unfinished, url, api_key)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if fatal is not None:
        message, code = _explain(fatal)
        # Jobs already accepted would go on without anyone to collect them.
        unfinished = [o.job_id for o in outcomes if o.job_id and (o.job is None or not o.job.is_final)]
        if unfinished and not isinstance(fatal, ServiceUnreachable):
            _cancel_all(unfinished, url, api_key)
        raise _fail(message, code)
    out = _out()
    out.print(_summary(outcomes))
    for o in outcomes:
        if o.ok:
            out.print(f"{o.path.name}: {len(o.files)} files in {o.folder}{os.sep}", soft_wrap=True)
        if o.error:
            err.print(f"[red]{o.path.name}[/]: {o.error}", soft_wrap=True)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(EXIT_FAILED)


# -- jobs -------------------------------------------------------------------------------------------------


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or canceled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Jobs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The page after this cursor.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursors to the last page.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Jobs, newest first."""
    table = Table()
    for column in ("job", "status", "stage", "progress", "song", "created"):
        table.add_column(column)
    with _friendly_errors(), Client(url, api_key) as client:
        while True:
            page = client.list(status=status, limit=limit, cursor=cursor)
            for job in page.jobs:
                table.add_row(job.job_id, job.status, job.stage, f"{job.progress:.0f}%", job.upload_name or "",
                              _when(job.created_at))  # fmt: skip
            cursor = page.next_cursor
            if not (all_pages and cursor):
                break
    _out().print(table)
    if cursor:
        _err().print(f"more: --cursor {cursor}")


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="The job view as the service sends it.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """A job's status, progress, analysis and results."""
    with _friendly_errors(), Client(url, api_key) as client:
        job = client.status(job_id)
    out = _out()
    if as_json:
        out.print_json(job.model_dump_json())
        return
    out.print(f"job       {job.job_id}\nsong      {job.upload_name}\nstatus    {job.status} ({job.stage}, "
              f"{job.progress:.0f}%)\ncreated   {_when(job.created_at)}\nfinished  {_when(job.finished_at)}")  # fmt: skip
    if job.error:
        out.print(f"error     {job.error}")
    if job.analysis:
        a = job.analysis
        out.print(f"tempo     {a.tempo_bpm} BPM ({a.tempo_source})\nmeter     {a.time_signature}\nkey       {a.key}")
    for link in job.results:
        out.print(f"result    {link.name}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Cancel a queued or running job (a finished one stays as it is)."""
    with _friendly_errors(), Client(url, api_key) as client:
        job = client.cancel(job_id)
    _out().print(f"job {job.job_id}: {job.status}")


@jobs_app.command("delete")
def jobs_delete(job_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Cancel if needed, then delete the job's upload and results."""
    with _friendly_errors(), Client(url, api_key) as client:
        client.delete(job_id)
    _out().print(f"job {job_id}: deleted")


@jobs_app.command("download")
def jobs_download(
    job_id: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the results.")] = Path("."),
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download every result of a succeeded job into OUTPUT/."""
    with _friendly_errors(), Client(url, api_key) as client:
        paths = client.download(job_id, output)
    for path in paths:
        _out().print(str(path))


# -- serve, and the service's own commands ----------------------------------------------------------------


def _laptop_config() -> Path | None:
    candidates = [Path.cwd() / "configs" / "laptop.yaml"]
    spec = importlib.util.find_spec("serve_app")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).resolve().parents[1] / "configs" / "laptop.yaml")
    return next((p for p in candidates if p.is_file()), None)


def _serve_executable() -> str | None:
    beside = Path(sys.executable).parent / "serve"
    return str(beside) if beside.is_file() else shutil.which("serve")


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="A Serve config (default configs/laptop.yaml).")
    ] = None,
) -> None:
    """Start the service on this machine: the same as `serve run configs/laptop.yaml`."""
    path = config or _laptop_config()
    if path is None:
        raise _fail("no configs/laptop.yaml here or beside the installed serve_app; pass --config.", EXIT_FAILED)
    exe = _serve_executable()
    if exe is None:
        raise _fail("Ray Serve's `serve` command is not installed (pip install 'ray[serve]').", EXIT_FAILED)
    _err().print(f"serve run {path}")
    os.execv(exe, [exe, "run", str(path)])


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("make-test-model", context_settings=_PASS_THROUGH, add_help_option=False)
def make_test_model(ctx: typer.Context) -> None:
    """Write a small HTDemucs with random weights into a local model folder (see `make-test-model -h`)."""
    from serve_app.cli import main as service_main

    raise typer.Exit(service_main(["make-test-model", *ctx.args]))


@app.command("keys", context_settings=_PASS_THROUGH, add_help_option=False)
def keys(ctx: typer.Context) -> None:
    """API keys in the database named by DATABASE_URL: create NAME | list | revoke ID (see `keys -h`)."""
    from serve_app.cli import main as service_main

    raise typer.Exit(service_main(["keys", *ctx.args]))


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="stemscribe")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

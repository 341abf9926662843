"""`dfer predict`: options in, one PredictConfig out, then `load_model` and `Model.stream`; records go
through a writer as they come."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dfer_cli.cli.console import err
from dfer_cli.cli.options import DeviceOpt, FrameOrderOpt, PrecisionOpt, check_writable_file
from dfer_cli.cli.startup import heavy_imports
from dfer_cli.errors import DferError, UsageError, one_line
from dfer_cli.progress import progress_bar


def predict(
    inputs: Annotated[list[str] | None, typer.Argument(
        help="video files and/or folders (with --ray also s3://, gs://, hdfs:// or file:// URIs)",
        show_default=False)] = None,
    weights: Annotated[str | None, typer.Option(
        help="weights entry name or path (default: the default entry); 'untrained' runs random "
             "weights (seeded: the same labels on every run) to check the pipeline, and says so")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON array on stdout")] = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="one JSON object per line, streamed")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    window: Annotated[float | None, typer.Option(
        help="timeline: one prediction per WINDOW seconds (at least 0.5)")] = None,
    plot: Annotated[Path | None, typer.Option(help="with --window: draw the timeline to this PNG")] = None,
    clips: Annotated[int, typer.Option(help="clips per file, averaged")] = 2,
    explain: Annotated[bool, typer.Option(
        "--explain", help="add why: the voice's and the face's shares of the call, which frames, face "
                          "regions and voice moments drove it (about 5x the model's time)")] = False,
    explain_dir: Annotated[Path | None, typer.Option(
        help="with or without --explain: also draw each file's explanation to DIR/<name>.png")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="clips per model call")] = 8,
    workers: Annotated[int | None, typer.Option(
        help="decoding processes (default: 0 for 1-2 files, else up to 4, fewer than the cores)")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="walk sub-folders")] = True,
    ext: Annotated[str | None, typer.Option(
        help="comma-separated extensions to pick from folders, e.g. mp4,mkv")] = None,
    frame_order: FrameOrderOpt = None,
    people: Annotated[str, typer.Option(
        help="all: a result for every person on screen, each with the voice that is theirs; main: the main "
             "face alone with the whole soundtrack (the benchmarks' reading)")] = "all",
    voice: Annotated[str, typer.Option(
        help="auto: each person hears the speech attributed to them (one face alone hears it all); all: "
             "everyone hears the whole soundtrack, as in the paper")] = "auto",
    max_people: Annotated[int, typer.Option(help="people analysed at most, the most present and largest")] = 8,
    from_list: Annotated[Path | None, typer.Option(
        help="a text file of more inputs, one per line (# starts a comment line)")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="run on Ray (pip install 'dfer[ray]'): local (start Ray here, stop it after), auto (the "
                      "running cluster) or ray://host:port; rows go to --output as Parquet",
        rich_help_panel="Ray")] = None,
    output: Annotated[Path | None, typer.Option(
        help="with --ray: the folder of Parquet rows; a rerun skips the files already there",
        rich_help_panel="Ray")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        help="model actors (default: one per GPU, or one on a cluster without GPUs)", min=1,
        rich_help_panel="Ray")] = None,
    ray_cpus_per_task: Annotated[float, typer.Option(
        help="CPUs each decoding task reserves", min=0.1, rich_help_panel="Ray")] = 1.0,
    report: Annotated[Path | None, typer.Option(
        help="write an HTML report: a page for one file, else a folder of pages with index.html; "
             "self-contained, the video linked by its path relative to the page", rich_help_panel="Report")] = None,
    copy_video: Annotated[bool, typer.Option(
        "--copy-video", help="with --report: copy each video beside its page, so that the report moves whole",
        rich_help_panel="Report")] = False,
    annotate: Annotated[Path | None, typer.Option(
        help="write the video annotated (H.264 and its sound): each person's box, number and call, who speaks, "
             "the timeline under the picture; a folder for several inputs; reads each video again after the "
             "analysis", rich_help_panel="Report")] = None,
    time_limit: Annotated[float, typer.Option(
        help="seconds a decoding process may spend on one file (or timeline part) before the file gets an "
             "error record; 0: no limit")] = 900.0,
) -> None:
    """Recognise the emotion in videos from the face and the voice.

    Examples:

      dfer predict interview.mp4

      dfer predict --json clips/ > emotions.json

      dfer predict --jsonl --ext mp4,mov phone_videos/ | jq .label

      dfer predict lecture.mkv --window 5 --plot timeline.png

      dfer predict interview.mp4 --explain --explain-dir why/

      dfer predict talkshow.mp4 --max-people 3 --json | jq '.[0].people'

      dfer predict dubbed.mkv --people main

      dfer predict interview.mp4 --window 2 --report interview.html --annotate annotated.mp4

      dfer predict --ray local --output rows/ videos/

      ray start --head; dfer predict --ray auto --output /shared/rows --from-list paths.txt

    Exit codes: 0 all files analysed, 1 some files failed (each has an error record), 2 usage error.
    """
    with heavy_imports():
        from dfer_cli import PredictConfig, load_model
        from dfer_cli.api import UNTRAINED
        from dfer_cli.results.writers import make_writer

    if sys.stdout is None:  # started with stdout closed (>&-): Python has no stream to write to
        raise UsageError("standard output is closed: the records have nowhere to go (redirect it to a file)")
    formats = [f for f, on in (("json", json_out), ("jsonl", jsonl), ("csv", csv_out)) if on]
    if len(formats) > 1:
        raise UsageError("choose one of --json, --jsonl, --csv")
    if (ray is None) != (output is None):
        raise UsageError("--ray and --output go together: the Ray rows are written to the --output folder")
    if ray is not None and (formats or plot or workers is not None or report or annotate):
        raise UsageError("--ray writes Parquet to --output: leave out --json, --jsonl, --csv, --plot, --workers, "
                         "--report and --annotate")
    if not inputs and from_list is None:
        raise UsageError("name video files or folders, or --from-list FILE")
    if plot and not window:
        raise UsageError("--plot draws a timeline: add --window SECONDS")
    if plot:
        check_writable_file(plot, "--plot")
    if copy_video and report is None:
        raise UsageError("--copy-video copies the videos beside the --report pages: add --report PATH")
    if report is not None or annotate is not None:
        from dfer_cli.report.targets import check_target

        check_target(report, "--report")
        check_target(annotate, "--annotate")
    if explain_dir is not None:
        if explain_dir.exists() and not explain_dir.is_dir():
            raise UsageError(f"--explain-dir {explain_dir}: exists and is not a folder")
        explain_dir.mkdir(parents=True, exist_ok=True)
    config = PredictConfig(window=window, batch_size=batch_size, workers=workers, recursive=recursive,
                           extensions=ext, explain=explain, explain_dir=explain_dir, from_list=from_list,
                           time_limit=time_limit).updated(
        clips=clips, frame_order=frame_order, people=people, voice=voice, max_people=max_people)
    if ray is not None:
        from dfer_cli import RayConfig

        settings = RayConfig(ray, actors=ray_actors, cpus_per_task=ray_cpus_per_task)
        _predict_on_ray(inputs or [], output, weights, config, settings, device, precision)
        return
    model = load_model(weights, device, precision, warn=False)  # untrained weights are said below
    records = model.stream(inputs or [], config)  # --from-list alone
    if not len(records):  # a torchrun process other than rank 0: rank 0 writes every record
        list(records)
        return
    if weights == UNTRAINED:
        err.print("[bold yellow]warning:[/bold yellow] untrained random weights: the pipeline runs, "
                  "the emotions are meaningless. Import real weights with `dfer weights import`.")
    writer = make_writer(formats[0] if formats else "table", sys.stdout, model.class_names, window is not None,
                         config.explain, config.people.mode == "all")
    results = []
    with progress_bar("analysing", len(records)) as advance:
        try:
            for result in records:
                results.append(result)
                if result.status == "error":
                    err.print(f"dfer: {one_line(result.path)}: {result.error}", markup=False, soft_wrap=True)
                writer.write(result)
                advance(description=result.path[-40:])
        finally:
            writer.close()
    if plot:
        _plot_first_timeline(results, plot)
    if report is not None or annotate is not None:
        _report(results, report, annotate, copy_video, len(results) > 1 or from_list is not None
                or any(Path(i).is_dir() for i in inputs or []))
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


def _plot_first_timeline(results: list, plot: Path) -> None:
    import numpy as np

    from dfer_cli.results.timeline_plot import plot_timeline, timeline_arrays

    shown = next((r for r in results if r.probabilities), None)
    if shown is None:
        raise DferError(f"{plot}: nothing to plot (no file had a face)")
    class_names = list(shown.probabilities)
    times, probs = timeline_arrays(shown, class_names)
    voice = None
    if shown.explanation is not None:  # NaN where a window had no face, or the file no audio
        voice = np.repeat([np.nan if c.voice_share is None else c.voice_share for c in shown.clips], 2)
    turns = sorted({(t.start, t.end, t.person) for c in shown.clips for t in c.speech or []},
                   key=lambda turn: turn[:2])
    plot_timeline(times, probs, class_names, plot, title=shown.path, voice=voice, speech=turns)
    err.print(f"timeline of {shown.path} -> {plot}", markup=False)


def _report(results: list, report: Path | None, annotate: Path | None, copy_video: bool,
            folder: bool) -> None:
    """`--report` and `--annotate`, through the public API, after the analysis."""
    from dfer_cli import write_annotated, write_report

    if report is not None:
        pages = write_report(results, report, copy_video=copy_video, folder=folder)
        err.print(f"report -> {pages[-1]}" if pages else "no report: no file was analysed", markup=False,
                  soft_wrap=True)
    if annotate is not None:
        videos = write_annotated(results, annotate, folder=folder)
        if videos:
            err.print(f"annotated -> {annotate}", markup=False, soft_wrap=True)


def _predict_on_ray(inputs: list[str], output: Path, weights: str | None, config, settings, device: str,
                    precision: str) -> None:
    """`--ray`: the job's rows to `output`, an error line per failed file, a summary line at the end."""
    from contextlib import ExitStack

    from dfer_cli import predict_on_ray

    with ExitStack() as stack:
        advance = None

        def start(todo: int, skipped: int) -> None:
            nonlocal advance
            if skipped:
                err.print(f"{skipped} files already in {output}: skipped", markup=False, soft_wrap=True)
            advance = stack.enter_context(progress_bar("analysing", todo))

        def row(r: dict) -> None:
            if r["status"] == "error":
                err.print(f"dfer: {r['path']}: {r['error']}", markup=False, soft_wrap=True)
            advance(description=r["path"][-40:])

        summary = predict_on_ray(inputs, output, weights, config, settings, device, precision, start, row)
    where = f" ({summary.device}, {summary.precision})" if summary.device else ""
    err.print(f"{summary.written} files analysed{where}, {summary.skipped} skipped, {summary.failed} failed "
              f"-> {summary.output}", markup=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)

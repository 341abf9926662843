"""The predict pipeline composed in one place: input files -> front end (decode, faces, fbank; in worker
processes) -> batches of clips across files -> classifier -> timeline join -> finished records; under
torchrun, sharded over the processes and gathered on rank 0."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from dfer_cli.predict.classifier import Classifier, classify
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.frontend import PreparedFile, guarded_prepare, lost, timed_out
from dfer_cli.predict.tasks import file_tasks
from dfer_cli.predict.timeline import TimelineJoiner
from dfer_cli.results.people import file_person, finish_people
from dfer_cli.results.records import FileResult
from dfer_cli.runtime.device import frontend_device
from dfer_cli.runtime.distributed import Ranks, gather
from dfer_cli.runtime.pool import bounded_map, clamp_workers, worker_count


def iter_predict(paths: list[str], classifier: Classifier, class_names: list[str], config: PredictConfig,
                 size: int, note: str = "", pictures: Sequence[Path] | None = None) -> Iterator[FileResult]:
    """Every file through the pipeline, each finished record yielded in input order. `note` goes on
    the explanation pictures (e.g. that the weights are untrained); `pictures` names them, one per
    path (by default `picture_paths`)."""
    waiting: list[PreparedFile] = []
    if pictures is None and config.explain_dir is not None:
        from dfer_cli.explain.plot import picture_paths  # matplotlib: only for pictures

        pictures = picture_paths(config.explain_dir, paths)
    joiner, names = TimelineJoiner(), iter(pictures or [])

    def flush() -> list[FileResult]:
        classify([p for p in waiting if p.videos is not None], classifier, class_names)
        done = [complete(p, classifier, class_names, config, note) for p in filter(None, map(joiner.add, waiting))]
        waiting.clear()
        return done

    # Workers pay a start-up of a few seconds (imports, the face detector): worth it from 3 files.
    workers = worker_count(len(paths), per_worker=3, cap=4) if config.workers is None else clamp_workers(config.workers)
    # With workers, up to 2 files per worker are decoded ahead of the model.
    # A timeline goes in parts, unless it is explained: an explanation needs all of a file's clips.
    tasks = file_tasks(paths, config.clips, None if config.explain else config.window)
    limit = config.time_limit or None
    device = str(frontend_device(classifier.device, workers))
    prepare = partial(guarded_prepare, config=config, size=size, device=device)
    for prepared in bounded_map(prepare, tasks, workers, limit=limit, late=partial(timed_out, limit=limit), lost=lost):
        if prepared.part.index == 0:
            prepared.picture = next(names, None)
        waiting.append(prepared)
        # A record that needs no model (an error, no face) goes out now, with the partial batch before
        # it: held back, a folder of junk would show nothing for minutes, and an interrupt lose it all.
        if prepared.videos is None or sum(len(p.clip_ids) for p in waiting) >= config.batch_size:
            yield from flush()
    yield from flush()


def complete(p: PreparedFile, classifier: Classifier | None, class_names: list[str], config: PredictConfig,
             note: str = "") -> FileResult:
    """A classified file (a timeline joined whole) to its finished record: its label from its clips, or
    from its people's, and with `config.explain` the explanation (which needs the classifier)."""
    if p.result.status != "error" and any(c.people for c in p.result.clips):
        finish_people(p.result, class_names)
    elif p.result.status != "error":
        p.result.finish(class_names)
    if p.result.label is not None and config.explain:
        _explain(p, classifier, class_names, note)
    p.result.timings["total"] = round(sum(p.result.timings.values()), 4)
    return p.result


def sharded(paths: list[str], classifier: Classifier, class_names: list[str], config: PredictConfig, size: int,
            note: str, ranks: Ranks) -> Iterator[FileResult]:
    """Under torchrun: this process analyses every `world`-th file, then rank 0 yields all the records in
    input order (a file that failed on any rank keeps its error record); the other ranks yield none.
    Explanation pictures are named over all the files first, so that two ranks never draw one name."""
    pictures = None
    if config.explain_dir is not None:
        from dfer_cli.explain.plot import picture_paths

        pictures = picture_paths(config.explain_dir, paths)
    mine = list(iter_predict(paths[ranks.rank::ranks.world], classifier, class_names, config, size, note,
                             pictures[ranks.rank::ranks.world] if pictures else None))
    shards = gather(mine, ranks)
    if ranks.main:
        yield from (shards[i % ranks.world][i // ranks.world] for i in range(len(paths)))


def _explain(p: PreparedFile, classifier: Classifier, class_names: list[str], note: str) -> None:
    """The explanation of the file's label; each clip (a timeline's window) gets its own shares. With
    people, each person's label is explained on their own rows, and the file's is its person's."""
    from dfer_cli.explain.evidence import FileClips, explain

    start = time.perf_counter()
    result = p.result
    owners = [None if k is None else result.clips[c].people[k]["person"]
              for c, k in zip(p.clip_ids, p.row_people, strict=True)]
    shown = file_person(result)
    for person in dict.fromkeys(owners):
        rows = [i for i, owner in enumerate(owners) if owner == person]
        entry = next((e for e in result.people or [] if e["person"] == person), None)
        label = entry["label"] if entry else result.label
        if label is None:
            continue
        clips = FileClips(p.videos[rows], p.audios[rows], p.frame_times[rows], p.audio_starts[rows], p.has_audio)
        record = explain(classifier.model, clips, class_names.index(label), class_names, classifier.device,
                         classifier.precision)
        if entry is not None:
            entry["explanation"] = record
        if entry is None or person == shown:
            result.explanation = record
            for i, clip in zip(rows, record["clips"], strict=True):
                result.clips[p.clip_ids[i]].voice_share = clip["voice_share"]
                result.clips[p.clip_ids[i]].face_share = clip["face_share"]
            if p.picture is not None:
                from dfer_cli.explain.plot import plot_explanation

                plot_explanation(record, p.videos[rows], p.audios[rows], p.picture, result.path, note)
    result.timings["explain"] = round(time.perf_counter() - start, 4)

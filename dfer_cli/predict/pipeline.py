"""The predict pipeline composed in one place. A file (or a timeline's part) goes through the stages
before the model in a worker process (`prepare_file`: media, clips, people, the model's rows); files are
batched for the classifier; a timeline's parts are joined; then `complete` finishes each record (people,
explanation, the weights' name). Under torchrun, sharded over the processes and gathered on rank 0;
on Ray (cluster/), the same functions in the same order."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from dfer_cli.clips.load import Shots, load_clips
from dfer_cli.faces import detect
from dfer_cli.media.channels import VOICE
from dfer_cli.people import stage as people
from dfer_cli.people.persons import file_person
from dfer_cli.predict.classifier import Classifier, classify
from dfer_cli.predict.config import PredictConfig
from dfer_cli.predict.frontend import PreparedFile, failed, lost, model_inputs, open_file, timed_out
from dfer_cli.predict.setup import RunSetup
from dfer_cli.predict.tasks import FilePart, file_tasks
from dfer_cli.predict.timeline import TimelineJoiner
from dfer_cli.results.records import FileResult
from dfer_cli.runtime.device import frontend_device
from dfer_cli.runtime.distributed import Ranks, gather
from dfer_cli.runtime.pool import bounded_map, clamp_workers, worker_count


def prepare_file(path: str, config: PredictConfig, size: int, detector: detect.FaceDetector,
                 part: FilePart | None = None, device: str = "cpu") -> PreparedFile:
    """A file's stages before the model: media (probe, plans), clips (frames, faces, crops, fbank),
    people (who is there, who speaks, who is analysed with which voice), and the model's rows. The
    front end's networks run on `device` (runtime.device.frontend_device)."""
    opened = open_file(path, config, part)
    every = people.every_face(config.people)
    clips = list(load_clips(path, opened.info, opened.plans, config.face, size, detector, opened.audio_errors,
                            lap=opened.clock.lap, every_face=every, channels=VOICE,
                            shots=Shots(config.cuts, config.clips, device, people.identified(config.people))))
    seen = people.before_model(path, opened.info, clips, config.people, device)
    opened.clock.lap("speakers")
    return model_inputs(opened, clips, seen, people=every)


def guarded_prepare(part: FilePart, config: PredictConfig, size: int, device: str = "cpu") -> PreparedFile:
    """`prepare_file` in a worker: one bad file never sinks the batch; its record carries the reason."""
    try:
        return prepare_file(part.path, config, size, detect.process_detector(config.face), part, device)
    except Exception as e:
        return failed(part.path, e, part)


def iter_predict(paths: list[str], classifier: Classifier, class_names: list[str], setup: RunSetup,
                 size: int, pictures: Sequence[Path] | None = None) -> Iterator[FileResult]:
    """Every file through the pipeline, each finished record yielded in input order. `pictures` names
    the explanation pictures, one per path (by default `setup.pictures`)."""
    waiting: list[PreparedFile] = []
    joiner, names = TimelineJoiner(), iter(pictures or setup.pictures(paths) or [])

    def flush() -> list[FileResult]:
        classify([p for p in waiting if p.videos is not None], classifier, class_names)
        done = [complete(p, classifier, class_names, setup) for p in filter(None, map(joiner.add, waiting))]
        waiting.clear()
        return done

    config = setup.config
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
        if prepared.videos is None or sum(len(p.rows) for p in waiting) >= config.batch_size:
            yield from flush()
    yield from flush()


def complete(p: PreparedFile, classifier: Classifier | None, class_names: list[str], setup: RunSetup) -> FileResult:
    """A classified file (a timeline joined whole) to its finished record: the people stage's after-model
    step (its label from its clips, or from its people's), with `explain` the explanation (which needs
    the classifier), its total time and the weights' name."""
    if p.result.status != "error":
        people.after_model(p.result, class_names)
    if p.result.label is not None and setup.config.explain:
        _explain(p, classifier, class_names, setup.note)
    p.result.timings["total"] = round(sum(p.result.timings.values()), 4)
    p.result.weights = setup.weights
    return p.result


def sharded(paths: list[str], classifier: Classifier, class_names: list[str], setup: RunSetup, size: int,
            ranks: Ranks) -> Iterator[FileResult]:
    """Under torchrun: this process analyses every `world`-th file, then rank 0 yields all the records in
    input order (a file that failed on any rank keeps its error record); the other ranks yield none.
    Explanation pictures are named over all the files first, so that two ranks never draw one name."""
    pictures = setup.pictures(paths)
    mine = list(iter_predict(paths[ranks.rank::ranks.world], classifier, class_names, setup, size,
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
    owners = [None if o.person is None else result.clips[o.clip].people[o.person].person for o in p.rows]
    shown = file_person(result)
    for person in dict.fromkeys(owners):
        rows = [i for i, owner in enumerate(owners) if owner == person]
        index = next((i for i, e in enumerate(result.people or []) if e.person == person), None)
        entry = None if index is None else result.people[index]
        label = entry.label if entry else result.label
        if label is None:
            continue
        clips = FileClips(p.videos[rows], p.audios[rows], p.frame_times[rows], p.audio_starts[rows], p.has_audio)
        record = explain(classifier.model, clips, class_names.index(label), class_names, classifier.device,
                         classifier.precision)
        if entry is not None:
            result.people[index] = replace(entry, explanation=record)
        if entry is None or person == shown:
            result.explanation = record
            for i, clip in zip(rows, record["clips"], strict=True):
                result.clips[p.rows[i].clip].voice_share = clip["voice_share"]
                result.clips[p.rows[i].clip].face_share = clip["face_share"]
            if p.picture is not None:
                from dfer_cli.explain.plot import plot_explanation

                plot_explanation(record, p.videos[rows], p.audios[rows], p.picture, result.path, note)
    result.timings["explain"] = round(time.perf_counter() - start, 4)

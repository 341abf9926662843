"""What the report and the annotated video cost, on CPU:

  report    `write_report` of a synthesised 10-minute `--window 2` record (two persons, speech turns, cuts,
            appearances: 300 windows), its video a GRID clip looped to 10 minutes (packets copied), so
            that the face thumbnails are cut from a real file; the page's size too;
  annotate  `write_annotated` in frames/s on a synthesised clip at 640x360 and at 1280x720, with a record of
            two persons in `--window 2` windows.

    python benchmarks/report_bench.py                 # both, best of 3
    python benchmarks/report_bench.py --repeats 1 --annotate-seconds 4

The records are synthesised (random calls, fixed boxes): the figures are of the writing, not of a model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from synth_media import loop_video, write_clip  # noqa: E402
from timing import best_of  # noqa: E402

import dfer_cli as dfer  # noqa: E402
from dfer_cli.labels import DFEW_CLASSES  # noqa: E402


def synthetic_record(path: Path, seconds: float, window: float, size: tuple[int, int], seed: int = 0) -> dict:
    """A `--window` record of two persons side by side who take turns to speak, with a cut every 20 s."""
    rng = np.random.default_rng(seed)
    w, h = size
    boxes = [[0.12 * w, 0.3 * h, 0.38 * w, 0.75 * h], [0.62 * w, 0.28 * h, 0.88 * w, 0.74 * h]]
    clips = []
    for k in range(int(seconds // window)):
        start, end = k * window, (k + 1) * window
        speaker = (k // 3) % 2
        turn = {"start": round(start + 0.2, 3), "end": round(end - 0.1, 3), "person": speaker}
        people = []
        for person, box in enumerate(boxes):
            p = rng.dirichlet(np.ones(len(DFEW_CLASSES)) * 0.6)
            probs = {n: round(float(v), 6) for n, v in zip(DFEW_CLASSES, p, strict=True)}
            people.append({"person": person, "box": box, "faces_found": 16, "frames": 16,
                           "voice": "own" if person == speaker else "none", "speech_seconds": 1.7 * (person == speaker),
                           "probabilities": probs, "label": max(probs, key=probs.get)})
        clips.append({"index": k, "start": start, "end": end, "audio_start": start, "audio_end": end,
                      "faces_found": 16, "frames": 16, "probabilities": people[speaker]["probabilities"],
                      "faces_seen": 2, "people": people, "speech": [turn], "speaker": speaker,
                      "label": people[speaker]["label"]})
    persons = [{"person": n, "box": b, "seen": seconds, "speaking": 0.5, "speech_seconds": seconds / 2, "voice": "own",
                "label": "neutral", "confidence": 0.4, "probabilities": dict(clips[0]["people"][n]["probabilities"]),
                "flags": {"faces_found": 1, "frames": 1}, "appearances": [[0.0, seconds]]}
               for n, b in enumerate(boxes)]
    return {"path": str(path), "status": "ok", "error": None, "label": "neutral", "confidence": 0.4,
            "probabilities": persons[0]["probabilities"], "clips": clips, "flags": {"no_audio": False},
            "media": {"duration": seconds, "width": w, "height": h, "frame_rate": 25.0}, "timings": {},
            "weights": "synthetic", "people": persons, "speaker": 0, "speech_seconds": seconds / 2,
            "unattributed_speech_seconds": 0.0, "cuts": [float(t) for t in np.arange(20, seconds, 20)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report-seconds", type=float, default=600.0)
    parser.add_argument("--annotate-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = loop_video(ROOT / "samples" / "bbaf2n.mpg", tmp / "long.mkv", args.report_seconds)
        record = synthetic_record(video, args.report_seconds, 2.0, (360, 288))
        page = tmp / "long.html"
        seconds = best_of(args.repeats, lambda: dfer.write_report(record, page))
        print(f"report: {len(record['clips'])} windows x 2 persons ({args.report_seconds:.0f} s at --window 2): "
              f"{seconds:.3f} s, page {page.stat().st_size / 1e6:.2f} MB (best of {args.repeats})")
        for size in ((640, 360), (1280, 720)):
            clip = write_clip(tmp / f"clip{size[0]}.mp4", args.annotate_seconds, size)
            record = synthetic_record(clip, args.annotate_seconds, 2.0, size)
            frames = round(args.annotate_seconds * 25)
            out = tmp / f"annotated{size[0]}.mp4"
            seconds = best_of(args.repeats, lambda r=record, o=out: dfer.write_annotated(r, o, progress=False))
            print(f"annotate {size[0]}x{size[1]}: {frames} frames in {seconds:.2f} s = {frames / seconds:.1f} frames/s "
                  f"(best of {args.repeats})")


if __name__ == "__main__":
    main()

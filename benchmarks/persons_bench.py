"""Persons across camera cuts, measured on composites of the GRID clips through `Model.predict` (each kind over
10 pairs of different speakers; id2_vcd_swwp2s and pwij3p are one speaker, so pwij3p is left out):

  cut       A's clip, a cut, B's clip, each with their own voice: two persons, both `voice: own`;
  reaction  A's clip, then B's face while A's voice goes on: two persons, B speaks nothing, the speaker is A;
  aba       A, B, A again, 3 s each, with --window 3: two persons, the first and last windows the same person;
  wide      A's clip in the left half of a wide frame, cut half-way to the right half: one person.

    python benchmarks/persons_bench.py [--pairs 10] [--keep DIR]

Who is who and who speaks does not depend on the classifier's weights: a tiny random model classifies
(its labels are not looked at). Prints each kind's count right and its seconds per file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

GRID = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media" / "grid"
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")


def _inputs(*paths: Path) -> list[str]:
    return [a for p in paths for a in ("-i", str(p))]


def make(kind: str, a: Path, b: Path, out: Path) -> Path:
    """The composite of `kind` from speakers `a` and `b`."""
    from mediagen import ffmpeg  # imageio-ffmpeg's binary: a test dependency

    graphs = {
        "cut": (_inputs(a, b), "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]"),
        "reaction": (_inputs(a, b), "[0:v][1:v]concat=n=2:v=1:a=0[v];[0:a][0:a]concat=n=2:v=0:a=1[a]"),
        "aba": (_inputs(a, b, a), "[0:v][0:a][1:v][1:a][2:v][2:a]concat=n=3:v=1:a=1[v][a]"),
        "wide": (_inputs(a), "[0:v]split[p][q];[p]trim=end=1.5,setpts=PTS-STARTPTS,pad=iw*2:ih:0:0[l];"
                 "[q]trim=start=1.5,setpts=PTS-STARTPTS,pad=iw*2:ih:iw:0[r];[l][r]concat=n=2:v=1:a=0[v];[0:a]anull[a]"),
    }
    inputs, graph = graphs[kind]
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *H264, out)
    return out


def right(kind: str, record: dict) -> bool:
    """Whether the record is what `kind` should give."""
    people = record.get("people") or []
    if record["status"] != "ok":
        return False
    if kind == "cut":
        return len(people) == 2 and all(p["voice"] == "own" for p in people)
    if kind == "reaction":
        return len(people) == 2 and people[1]["speech_seconds"] == 0 and record["speaker"] == 0
    if kind == "aba":
        numbers = [[q["person"] for q in c["people"] or []] for c in record["clips"]]
        return len(people) == 2 and numbers[0] == numbers[-1] == [0] and numbers[1] == [1]
    return len(people) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["cut", "reaction", "aba", "wide"])
    parser.add_argument("--keep", type=Path, help="keep the composites (and reuse them) in this folder")
    args = parser.parse_args()

    from conftest import save_tiny_weights

    import dfer_cli as dfer

    speakers = [p for p in sorted(GRID.glob("*.mpg")) if p.stem != "pwij3p"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = dfer.load_model(save_tiny_weights(Path(tmp) / "tiny"), device="cpu", precision="fp32")
        for kind in args.kinds:
            good, seconds, wrong = 0, 0.0, []
            for i in range(args.pairs):
                a, b = speakers[i % len(speakers)], speakers[(i + 1) % len(speakers)]
                path = folder / f"{kind}_{a.stem}_{b.stem}.mp4"
                if not path.exists():
                    make(kind, a, b, path)
                start = time.perf_counter()
                (record,) = model.predict(path, workers=0, window=3.0 if kind == "aba" else None)
                seconds += time.perf_counter() - start
                ok = right(kind, record.to_dict())
                good += ok
                if not ok:
                    wrong.append(f"{a.stem}/{b.stem}")
            print(f"{kind:9s} {good} of {args.pairs} right, {seconds / args.pairs:.2f} s a file"
                  + (f"; wrong: {', '.join(wrong)}" if wrong else ""), flush=True)


if __name__ == "__main__":
    main()

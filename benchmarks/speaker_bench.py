"""Who speaks, measured on composites of the GRID clips (one speaker each) built with ffmpeg.

    python benchmarks/speaker_bench.py [--workers 2] [--cache DIR] [--limit N] [--sweep]

Cases: (a) two speakers side by side (hstack), the audio of the left or of the right one; (b) the same videos with
the voice of a third GRID speaker (off screen); (c) each face alone with its own voice; (d) digital silence and
-60 dBFS noise under two faces; (e) a turn: 6 s, the left clip then the left face listening beside the right face
listening then the right clip, audio = left clip's then right clip's. "Listening" is the first 10 frames of the
clip (GRID starts with about half a second of silence, the face still) played forwards and backwards in a loop
("still"), or, harder, the whole clip reversed: lips move, but not with the voice heard ("moving").
Landmarks are mediapipe 0.10.14's FaceMesh on the composite frames, cached in --cache (they do not depend on the
audio). --sweep prints the figures over thresholds, lags, high-pass windows and features.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GRID = Path(os.environ.get("DFER_SHARED", ROOT.parent / "shared")) / "media" / "grid"
sys.path[:0] = [str(ROOT)]

from dfer_cli.people import attribution as attribute  # noqa: E402
from dfer_cli.people import vad as speech  # noqa: E402

FPS = 25
RATE = 44100
W, H = 360, 288
LISTEN_STILL = (
    "trim=end_frame=10,setpts=PTS-STARTPTS,split[{t}f][{t}b];[{t}b]reverse[{t}r];[{t}f][{t}r]concat=n=2,"
    "loop=loop=3:size=20,trim=end_frame=75,setpts=N/25/TB"
)
LISTEN_MOVING = "reverse,trim=end_frame=75,setpts=N/25/TB"


def clips() -> list[Path]:
    return sorted(GRID.glob("*.mpg"))


def run_ffmpeg(args: list[str]) -> bytes:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    done = subprocess.run(command, capture_output=True)
    if done.returncode:
        raise RuntimeError(done.stderr.decode())
    return done.stdout


def video_frames(inputs: list[Path], graph: str, width: int, height: int) -> np.ndarray:
    """The frames that ``graph`` (a filter_complex ending in [v]) makes of ``inputs``, RGB."""
    args = [a for p in inputs for a in ("-i", str(p))]
    raw = run_ffmpeg([*args, "-filter_complex", graph, "-map", "[v]", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def audio(inputs: list[Path], graph: str | None = None) -> np.ndarray:
    """(2, samples) float32 at 44.1 kHz: the first input's audio, or what ``graph`` (ending in [a]) makes."""
    args = [a for p in inputs for a in ("-i", str(p))]
    mapping = ["-filter_complex", graph, "-map", "[a]"] if graph else ["-map", "0:a"]
    raw = run_ffmpeg([*args, *mapping, "-f", "f32le", "-ac", "2", "-ar", str(RATE), "-"])
    return np.frombuffer(raw, np.float32).reshape(-1, 2).T.copy()


def face_landmarks(frames: np.ndarray, slots: int) -> np.ndarray:
    """(slots, frames, 468, 2) pixel landmarks from FaceMesh (tracking mode), NaN where no face; a face goes to the
    slot of the vertical strip its nose is in (faces side by side, one per strip)."""
    from mediapipe.python.solutions.face_mesh import FaceMesh

    n, height, width = frames.shape[:3]
    out = np.full((slots, n, 468, 2), np.nan, np.float32)
    with FaceMesh(static_image_mode=False, max_num_faces=slots, refine_landmarks=False) as mesh:
        for i, frame in enumerate(frames):
            found = mesh.process(frame).multi_face_landmarks or []
            for face in found:
                xy = np.array([(p.x * width, p.y * height) for p in face.landmark], np.float32)
                slot = min(slots - 1, int(xy[1, 0] // (width / slots)))
                out[slot, i] = xy
    return out


def composite(kind: str, names: tuple[str, ...]) -> tuple[list[Path], str, int]:
    """Inputs, a filter graph ending in [v], and the width, for one composite video."""
    paths = [GRID / f"{n}.mpg" for n in names]
    if kind == "single":
        return paths, "[0:v]setpts=PTS-STARTPTS[v]", W
    if kind == "pair":
        return paths, "[0:v]setpts=PTS-STARTPTS[l];[1:v]setpts=PTS-STARTPTS[r];[l][r]hstack[v]", 2 * W
    listen = LISTEN_STILL if kind == "turn_still" else LISTEN_MOVING
    graph = (
        "[0:v]setpts=PTS-STARTPTS,split[a0][a1];[1:v]setpts=PTS-STARTPTS,split[b0][b1];"
        f"[a1]{listen.format(t='la')}[al];[b0]{listen.format(t='lb')}[bl];"
        "[a0][al]concat=n=2,setpts=N/25/TB[left];[bl][b1]concat=n=2,setpts=N/25/TB[right];[left][right]hstack[v]"
    )
    return paths, graph, 2 * W


def cached_landmarks(cache: Path, kind: str, names: tuple[str, ...]) -> np.ndarray:
    key = hashlib.sha1(f"{kind}:{','.join(names)}".encode()).hexdigest()[:16]
    file = cache / f"{kind}-{'-'.join(names)}-{key}.npy"
    if not file.exists():
        inputs, graph, width = composite(kind, names)
        frames = video_frames(inputs, graph, width, H)
        marks = face_landmarks(frames, 1 if kind == "single" else 2)
        np.save(file.with_suffix(".tmp.npy"), marks)
        file.with_suffix(".tmp.npy").rename(file)
    return np.load(file)


def _job(args: tuple[Path, str, tuple[str, ...]]) -> None:
    cached_landmarks(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfer_speaker_bench"))
    parser.add_argument("--limit", type=int, default=0, help="ordered pairs to use (0: all 110)")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    names = [p.stem for p in clips()]
    pairs = list(itertools.permutations(names, 2))
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    jobs = [(args.cache, "single", (n,)) for n in names]
    jobs += [(args.cache, kind, p) for kind in ("pair", "turn_still", "turn_moving") for p in pairs]
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(_job, jobs))
    print(f"landmarks ready ({len(jobs)} composites, {time.perf_counter() - t:.0f} s)", flush=True)
    evaluate(args, names, pairs)


TURN_AT = 3.0  # seconds: in a turn composite the left clip's audio plays before, the right clip's after


class Data:
    """Everything the figures need, computed once: lip openings per composite, loudness and segments per voice."""

    def __init__(self, cache: Path, names: list[str], pairs: list[tuple[str, str]], band: tuple[float, float]):
        self.names, self.pairs = names, pairs
        self.marks = {("single", (n,)): cached_landmarks(cache, "single", (n,)) for n in names}
        for kind in ("pair", "turn_still", "turn_moving"):
            for p in pairs:
                self.marks[kind, p] = cached_landmarks(cache, kind, p)
        self.set_lips(attribute.LIP_PAIRS)
        self.waves = {n: audio([GRID / f"{n}.mpg"]) for n in names}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what a worker process runs with
        for _ in range(3):  # load the model; TorchScript's profiling runs optimise on the first calls
            speech.speech_segments(self.waves[names[0]], RATE)
            speech.speech_probabilities(speech.resample(self.waves[names[0]], RATE))
        t = time.perf_counter()
        self.segments = {n: speech.speech_segments(w, RATE) for n, w in self.waves.items()}
        seconds = sum(w.shape[-1] for w in self.waves.values()) / RATE
        self.vad_ms_per_s = (time.perf_counter() - t) * 1000 / seconds
        t = time.perf_counter()
        for w in self.waves.values():
            speech.speech_probabilities(speech.resample(w, RATE))  # both channels, as if they differed
        self.vad_ms_per_s_2ch = (time.perf_counter() - t) * 1000 / seconds
        torch.set_num_threads(threads)
        self.turn_waves = {
            p: np.concatenate([self.waves[p[0]], self.waves[p[1]]], axis=1) for p in pairs
        }
        self.turn_segments = {p: speech.speech_segments(w, RATE) for p, w in self.turn_waves.items()}
        self.set_band(band)

    def set_lips(self, pairs: tuple[tuple[int, int], ...]) -> None:
        self.lips = {k: attribute.lip_opening(m, pairs) for k, m in self.marks.items()}

    def set_band(self, band: tuple[float, float]) -> None:
        self.band = band
        times = np.arange(75) / FPS
        self.loud = {n: attribute.loudness_track(w, RATE, times, band) for n, w in self.waves.items()}
        self.turn_loud = {
            p: attribute.loudness_track(w, RATE, np.arange(self.lips["turn_still", p].shape[1]) / FPS, band)
            for p, w in self.turn_waves.items()
        }


def chop(segments: list[tuple[float, float]], piece: float) -> list[tuple[float, float]]:
    """``segments`` cut into pieces of ``piece`` seconds (the last one of each shorter)."""
    return [(s, min(e, s + piece)) for start, e in segments for s in np.arange(start, e - 1e-6, piece)]


def shifted(track: np.ndarray, frames: int) -> np.ndarray:
    """``track`` delayed by ``frames`` (early if negative), the edge value repeated."""
    if frames > 0:
        return np.r_[np.full(frames, track[0]), track[:-frames]]
    return np.r_[track[-frames:], np.full(-frames, track[-1])] if frames < 0 else track


def file_decision(result: list[attribute.SegmentAttribution]) -> int | None | str:
    """The person with the most attributed speech ("none" where there was no speech segment)."""
    if not result:
        return "none"
    spoken = attribute.speaking_time(result)
    return max(spoken, key=lambda k: spoken[k])


def central(times: np.ndarray, segments: list[tuple[float, float]], limit: int | None) -> np.ndarray:
    """The frames the lips would be read on with at most ``limit`` per segment (its frames and 0.2 s either side,
    around its middle), as dfer predict picks them; all frames without a limit."""
    if limit is None:
        return np.arange(len(times))
    picked = []
    for start, end in segments:
        inside = np.flatnonzero((times >= start - 0.2) & (times < end + 0.2))
        first = max(0, (len(inside) - limit) // 2)
        picked.append(inside[first:first + limit])
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def read_every(times: np.ndarray, step: int) -> np.ndarray:
    """Indices of every ``step``-th frame of each run of ``times``, and of each run's last frame."""
    runs = attribute.frame_runs(times)
    keep = np.zeros(len(runs), dtype=bool)
    for run in np.unique(runs):
        cols = np.flatnonzero(runs == run)
        keep[cols[::step]] = True
        keep[cols[-1]] = True
    return np.flatnonzero(keep)


def sparse_lips(times: np.ndarray, lips: np.ndarray, step: int) -> np.ndarray:
    """``lips`` (faces, frames) as if the mesh had read every ``step``-th frame only: the frames between linear
    between those read, within each run; NaN stays NaN."""
    read, runs = read_every(times, step), attribute.frame_runs(times)
    out = np.full(lips.shape, np.nan)
    for run in np.unique(runs):
        cols, mine = np.flatnonzero(runs == run), read[runs[read] == run]
        for face in range(lips.shape[0]):
            ok = mine[np.isfinite(lips[face, mine])]
            if len(ok) >= 2:
                out[face, cols] = np.interp(times[cols], times[ok], lips[face, ok])
    return np.where(np.isfinite(lips), out, np.nan)


def attribute_on(times, lips, loud, segments, config, limit: int | None, step: int = 1):
    keep = central(times, segments, limit)
    lips = lips[:, keep] if step == 1 else sparse_lips(times[keep], lips[:, keep], step)
    return attribute.attribute_segments(times[keep], lips, loud[keep], segments, config)


def figures(data: Data, config: attribute.AttributionConfig, thirds: int = 9, limit: int | None = None,
            step: int = 1) -> dict[str, float]:
    """The attribution's figures; ``limit``: lips read on at most that many frames of each segment; ``step``:
    on every step-th of them."""
    times = np.arange(75) / FPS
    run = lambda lips, voice: attribute_on(  # noqa: E731
        times[: lips.shape[1]], lips, data.loud[voice], data.segments[voice], config, limit, step
    )
    right = total = 0
    for left, rightname in data.pairs:
        lips = data.lips["pair", (left, rightname)]
        for slot, voice in enumerate((left, rightname)):
            right += file_decision(run(lips, voice)) == slot
            total += 1
    pairs = right / total
    rejected = total = 0
    for left, rightname in data.pairs:
        lips = data.lips["pair", (left, rightname)]
        others = [n for n in data.names if n not in (left, rightname)][:thirds]
        for voice in others:
            rejected += file_decision(run(lips, voice)) is None
            total += 1
    offscreen = rejected / total
    singles = np.mean([file_decision(run(data.lips["single", (n,)], n)) == 0 for n in data.names])
    turn = {}
    for kind in ("turn_still", "turn_moving"):
        good = seconds = 0.0
        for p in data.pairs:
            lips = data.lips[kind, p]
            t = np.arange(lips.shape[1]) / FPS
            for a in attribute_on(t, lips, data.turn_loud[p], data.turn_segments[p], config, limit, step):
                truth = 0 if (a.start + a.end) / 2 < TURN_AT else 1
                good += (a.end - a.start) * (a.person == truth)
                seconds += a.end - a.start
        turn[kind] = good / seconds
    return {"pairs": pairs, "offscreen": offscreen, "singles": float(singles), **turn}


def line(name: str, f: dict[str, float]) -> str:
    return (f"{name:<34} pairs {f['pairs']:6.1%}  off-screen rejected {f['offscreen']:6.1%}"
            f"  singles {f['singles']:6.1%}  turns still {f['turn_still']:6.1%}  moving {f['turn_moving']:6.1%}")


def evaluate(args: argparse.Namespace, names: list[str], pairs: list[tuple[str, str]]) -> None:
    default = attribute.AttributionConfig()
    data = Data(args.cache, names, pairs, default.band_hz)
    print(f"silero-vad: {data.vad_ms_per_s:.1f} ms per second of audio (identical stereo channels: one run), "
          f"{data.vad_ms_per_s_2ch:.1f} ms/s for two distinct channels (one thread)")
    n_segments = [len(s) for s in data.segments.values()]
    print(f"speech segments per GRID clip: {n_segments}; per turn composite: "
          f"{np.mean([len(s) for s in data.turn_segments.values()]):.1f} on average")
    silent = np.zeros((2, 3 * RATE), np.float32)
    noise = (np.random.default_rng(0).standard_normal((2, 3 * RATE)) * 10 ** (-60 / 20)).astype(np.float32)
    print(f"silence: {speech.speech_seconds(speech.speech_segments(silent, RATE)):.2f} s of speech in digital silence,"
          f" {speech.speech_seconds(speech.speech_segments(noise, RATE)):.2f} s in -60 dBFS noise")
    one_channel = np.stack([data.waves[names[0]][0], np.zeros_like(data.waves[names[0]][0])])
    print(f"a voice on the left channel only: {speech.speech_segments(one_channel, RATE)} "
          f"(both channels: {data.segments[names[0]]})")
    print(line("default", figures(data, default)))
    # A lower rate for the mesh, the frames between interpolated: what reading fewer frames would cost.
    print(line("lips on 75 frames of a segment", figures(data, default, limit=75)))
    for step in (2, 3):
        print(line(f"the same, mesh on every {step}. frame", figures(data, default, limit=75, step=step)))
    print(line("one decision per file", figures(data, replace(default, pool_frames=10**9))))
    print(line("lags (0, 1): GRID's own offset", figures(data, replace(default, lags=(0, 1)))))
    data.set_lips((attribute.INNER_LIP,))
    print(line("notes' baseline: inner lip, r > 0.45", figures(data, replace(default, threshold=0.45))))
    print(line("inner lip, r > 0.5", figures(data, default)))
    data.set_lips(attribute.LIP_PAIRS)
    if not args.sweep:
        return
    for limit in (75, 50, 32, 25, 16):  # dfer predict reads at most PeopleConfig.max_frames (75) of a segment
        print(line(f"lips on {limit} frames of a segment", figures(data, default, limit=limit)))
    for threshold in (0.35, 0.4, 0.45, 0.5, 0.55):
        print(line(f"threshold {threshold}", figures(data, replace(default, threshold=threshold))))
    for pool in (0, 25, 50, 75, 100):
        print(line(f"pool_frames {pool}", figures(data, replace(default, pool_frames=pool))))
    turns = dict(data.turn_segments)
    for piece in (0.4, 0.8):  # silero's segments cut into words: how much pooling short segments helps
        data.turn_segments = {p: chop(s, piece) for p, s in turns.items()}
        for pool in (0, 25, 50):
            f = figures(data, replace(default, pool_frames=pool))
            print(f"segments cut to {piece} s, pool_frames {pool}: turns still {f['turn_still']:.1%}"
                  f"  moving {f['turn_moving']:.1%}")
    data.turn_segments = turns
    for shift in (-1, 1):  # the audio a frame early or late: lags must cover a file's own offset
        loud, turn_loud = data.loud, data.turn_loud
        data.loud = {n: shifted(v, shift) for n, v in loud.items()}
        data.turn_loud = {p: shifted(v, shift) for p, v in turn_loud.items()}
        for lags in ((0, 1), (-1, 0, 1, 2)):
            print(line(f"audio {shift:+d} frame, lags {lags}", figures(data, replace(default, lags=lags))))
        data.loud, data.turn_loud = loud, turn_loud
    inner3 = ((13, 14), (82, 87), (312, 317))
    for label, pairs in (("outer lip only", (attribute.OUTER_LIP,)), ("3 inner pairs", inner3)):
        data.set_lips(pairs)
        for threshold in (0.45, 0.5):
            print(line(f"{label}, r > {threshold}", figures(data, replace(default, threshold=threshold))))
    data.set_lips(attribute.LIP_PAIRS)
    for lags in ((0,), (-1, 0, 1), (-1, 0, 1, 2), (0, 1, 2), (-1, 0, 1, 2, 3, 4), (-2, -1, 0, 1, 2)):
        print(line(f"lags {lags}", figures(data, replace(default, lags=lags))))
    for hp in (5, 7, 9, 11, 15):
        print(line(f"highpass_frames {hp}", figures(data, replace(default, highpass_frames=hp))))
    for band in ((0.0, 22050.0), (300.0, 3000.0), (800.0, 4000.0), (1000.0, 6000.0), (2000.0, 8000.0)):
        data.set_band(band)
        print(line(f"band {band}", figures(data, replace(default, band_hz=band))))
    data.set_band(default.band_hz)


if __name__ == "__main__":
    main()

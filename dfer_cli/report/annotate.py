"""`write_annotated`: each analysed video re-encoded (PyAV, H.264, its own audio) with the overlay drawn on
every frame; the video is read once more, after the analysis, frame by frame."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dfer_cli.atomic import atomic_path
from dfer_cli.errors import DferError, MediaError
from dfer_cli.media.decode import frame_size
from dfer_cli.progress import progress_bar
from dfer_cli.report.overlay import Overlay
from dfer_cli.report.page import untrained
from dfer_cli.report.spans import file_spans
from dfer_cli.report.targets import (
    COMMENT,
    annotated_by_dfer,
    check_folder,
    check_replaceable,
    is_folder_target,
    names_in_folder,
)
from dfer_cli.report.writer import as_records

UNTRAINED_NOTICE = "untrained weights: the emotions are meaningless"
_CRF = "18"  # near-transparent: the picture stays the picture, only the drawing differs
_PRESET = "veryfast"


def write_annotated(records: Iterable, path: str | os.PathLike[str], *, folder: bool | None = None,
                    progress: bool = True) -> list[Path]:
    """Write each analysed record's video, annotated, to `path` (one record: that file, an .mp4 or .mkv;
    several, or `folder=True`: a folder with `<name>.mp4` per video) and return the files written.
    Boxes are drawn where dfer looked (every window of a `--window` timeline; a short file whole; the
    clips of a longer one); the strip under the picture is the whole timeline. A path that exists is
    replaced only when dfer annotated it."""
    records = [r for r in as_records(records) if r.get("status") != "error"]
    target = Path(path)
    if not is_folder_target(target, len(records), folder):
        outputs = [target]
        if target.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise DferError(f"{target}: an annotated video is written as .mp4, .mkv or .mov")
    else:
        check_folder(target)
        outputs = [target / n for n in names_in_folder([r["path"] for r in records], ".mp4")]
    for record, output in zip(records, outputs, strict=True):
        if output.absolute() == Path(record["path"]).absolute():
            raise DferError(f"{output}: is the input video itself; name another file")
    check_replaceable(outputs, annotated_by_dfer, "an annotated video")
    total = sum(_frames_estimate(r) for r in records)
    with progress_bar("annotating: reading the video again", total, enabled=progress) as advance:
        for record, output in zip(records, outputs, strict=True):
            advance(0, description=f"annotating (reading {Path(record['path']).name} again)")
            _annotate_one(record, output, advance)
    return outputs


def _annotate_one(record: dict, output: Path, advance=lambda n=1, description=None: None) -> None:
    """One record's video, annotated, written atomically to `output`."""
    source = record["path"]
    spans = file_spans(record)
    class_names = list(record.get("probabilities") or next(
        (p["probabilities"] for p in record.get("people") or [] if p.get("probabilities")), None) or [])
    try:
        container = av.open(source)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(Path(source), f"cannot be read again to annotate it ({e})") from None
    with container, atomic_path(output) as tmp:
        if not container.streams.video:
            raise MediaError(Path(source), "has no video stream to annotate")
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        audio = container.streams.audio[0] if container.streams.audio else None
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        with av.open(str(tmp), "w", format=_format(output)) as out:
            out.metadata["comment"] = COMMENT
            encoder, out_audio, overlay = None, None, None
            copy = audio is not None and audio.codec_context.name == "aac"  # the very sound, its packets copied
            waiting = []  # sound read before the first picture: every stream must exist before the first mux
            for packet in container.demux(*[s for s in (video, audio) if s is not None]):
                if packet.stream is audio:
                    if copy:
                        pieces = [packet] if packet.dts is not None else []
                    else:
                        pieces = list(_decoded(packet))
                        for frame in pieces:
                            frame.pts = None  # the encoder counts the samples
                    if encoder is None:
                        waiting += pieces
                    else:
                        _mux_audio(out, out_audio, pieces, copy)
                    continue
                for frame in _decoded(packet):
                    picture = frame.to_image()
                    rotation = round(frame.rotation / 90) % 4 * 90
                    if rotation:  # turned upright, as predict read it (its boxes are upright)
                        picture = picture.rotate(rotation, expand=True)
                    if overlay is None:
                        scale = picture.width / frame_size(picture.width, picture.height)[0]
                        overlay = Overlay(spans, class_names, picture.width, picture.height, scale,
                                          UNTRAINED_NOTICE if untrained(record) else None)
                        encoder = _video_stream(out, video, overlay)
                        if audio is not None:
                            out_audio = out.add_stream_from_template(audio) if copy else _audio_stream(out, audio)
                            _mux_audio(out, out_audio, waiting, copy)
                    drawn = overlay.draw(picture, (frame.time or 0.0) - origin)
                    if drawn.width != encoder.width:  # an odd width, padded to H.264's even one
                        padded = Image.new("RGB", (encoder.width, drawn.height), "white")
                        padded.paste(drawn)
                        drawn = padded
                    new = av.VideoFrame.from_ndarray(np.asarray(drawn), format="rgb24")
                    new.pts, new.time_base = frame.pts, frame.time_base
                    out.mux(encoder.encode(new.reformat(format="yuv420p")))
                    advance()
            if encoder is None:
                raise MediaError(Path(source), "no video frame could be decoded to annotate")
            out.mux(encoder.encode())
            if out_audio is not None and not copy:
                out.mux(out_audio.encode())


def _mux_audio(out, stream, pieces: list, copy: bool) -> None:
    """Packets copied into `stream`, or frames encoded by it."""
    for piece in pieces:
        if copy:
            piece.stream = stream
            out.mux(piece)
        else:
            out.mux(stream.encode(piece))


def _audio_stream(out, audio):
    """AAC at the original rate and channels for a sound in another codec (MPEG-1's, PCM): one every player
    and MP4 takes."""
    stream = out.add_stream("aac", rate=audio.codec_context.sample_rate)
    if audio.codec_context.layout:  # else the encoder's default (stereo)
        stream.layout = audio.codec_context.layout
    return stream


def _video_stream(out, video, overlay: Overlay):
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    stream = out.add_stream("libx264", rate=rate)
    stream.width = overlay.width + overlay.width % 2
    stream.height = overlay.height + overlay.strip_height
    stream.pix_fmt = "yuv420p"
    stream.time_base = video.time_base
    stream.codec_context.time_base = video.time_base
    stream.options = {"crf": _CRF, "preset": _PRESET}
    return stream


def _decoded(packet):
    try:
        return packet.decode()
    except av.error.InvalidDataError:  # a corrupt packet: skipped, as predict skips it
        return []


def _format(output: Path) -> str:
    return {".mkv": "matroska", ".mov": "mov"}.get(output.suffix.lower(), "mp4")


def _frames_estimate(record: dict) -> int:
    media = record.get("media") or {}
    return max(1, round(float(media.get("duration") or 0) * float(media.get("frame_rate") or 25)))

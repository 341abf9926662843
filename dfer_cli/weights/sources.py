"""Where the official weights are published: the authors' trained MMA-DFER models, and the two
self-supervised encoders that training starts from. Only addresses the projects publish themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfer_cli.labels import DFEW_CLASSES, MAFW_CLASSES

MMA_DFER_README = "https://github.com/katerynaCh/MMA-DFER"
AUDIOMAE_DRIVE_ID = "1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu"


@dataclass(frozen=True)
class Source:
    what: str
    url: str
    then: str


# The two Google Drive folders linked from the MMA-DFER README (section "Evaluation").
TRAINED = (
    Source(f"MMA-DFER trained on DFEW ({len(DFEW_CLASSES)} classes: {', '.join(DFEW_CLASSES)})",
           "https://drive.google.com/drive/folders/1I3dvClr4oVH3h5cGmaFXmTc8aV-nYHof",
           "dfer weights import 'FILE-LINK' --name dfew-NAME"),
    Source(f"MMA-DFER trained on MAFW ({len(MAFW_CLASSES)} classes: {', '.join(MAFW_CLASSES)})",
           "https://drive.google.com/drive/folders/1I5baHCpBdU5RT48yaFyNhnZoQkbHm-OS",
           "dfer weights import 'FILE-LINK' --name mafw-NAME"),
)


ENCODERS = (
    Source("MAE-Face ViT-B/16, the face encoder: the release file mae_face_pretrain_vit_base.pth",
           "https://github.com/FuxiVirtualHuman/MAE-Face/releases",
           "dfer train --image-encoder mae_face_pretrain_vit_base.pth ..."),
    Source("AudioMAE ViT-B/16 pretrained on AudioSet-2M, the audio encoder (one Google Drive file)",
           f"https://drive.usercontent.google.com/download?id={AUDIOMAE_DRIVE_ID}&export=download&confirm=t",
           "dfer train --audio-encoder audiomae_pretrained.pth ..."),
)


def describe() -> str:
    """The text of `dfer weights sources`."""
    lines = [
        "Trained models, for `dfer weights import` (then `dfer predict`, `dfer evaluate`, or",
        "`dfer train --init-weights` to fine-tune). Both are Google Drive folders linked from",
        f"the authors' README, {MMA_DFER_README} (respect the data sets' licences):",
        "open one in a browser, copy the link of a checkpoint in it, and import that link.",
        "",
        *_block(TRAINED),
        "Self-supervised encoders, for `dfer train --image-encoder / --audio-encoder` (training",
        "from the encoders; they are not models that `dfer weights import` takes). Download them,",
        "then pass their paths.",
        "",
        *_block(ENCODERS),
    ]
    return "\n".join(lines).rstrip()


def _block(sources: tuple[Source, ...]) -> list[str]:
    return [line for s in sources for line in (f"  {s.what}", f"    {s.url}", f"    -> {s.then}", "")]

"""Official checkpoints in: released MMA-DFER models, and the MAE-Face / AudioMAE encoders that training
starts from, their tensors renamed onto dfer's MMADFER."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dfer_cli.errors import CheckpointError
from dfer_cli.labels import MAFW_CLASSES, REFERENCE_ORDER, TIME_ORDER, default_class_names
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.weights.digest import sha256
from dfer_cli.weights.format import LoadedWeights, WeightsConfig, build_loaded
from dfer_cli.weights.pth import load_torch_file, state_dict_tensors

# Official MMA-DFER names (DataParallel prefix already stripped) -> dfer names; None drops the tensor.
_OFFICIAL_RENAMES: list[tuple[str, str | None]] = [
    (r"(image_encoder|audio_model)\.head\..*", None),
    (r"temporal_net\.temporal_transformer\.layers\.0\.[01]\.fn\.norm2\..*", None),
    (r"image_encoder\.(cls_token|pos_embed|patch_embed\..*|blocks\..*|norm\..*)", r"image.\1"),
    (r"audio_model\.(cls_token|pos_embed|patch_embed\..*|blocks\..*|norm\..*)", r"audio.\1"),
    (r"image_encoder\.learnable_prompts_init", "image.prompts"),
    (r"audio_model\.learnable_prompts_init", "audio.prompts"),
    (r"image_encoder\.learnable_prompts_progr\.(\d+)", r"image.progressive_prompts.\1"),
    (r"audio_model\.learnable_prompts_progr\.(\d+)", r"audio.progressive_prompts.\1"),
    (r"image_encoder\.temporal_pre\.(\d+)\.", r"fusion.\1.image_down."),
    (r"image_encoder\.temporal_pre_norm\.(\d+)\.", r"fusion.\1.image_norm."),
    (r"image_encoder\.audio_proj_pre\.(\d+)\.0\.", r"fusion.\1.audio_down."),
    (r"image_encoder\.audio_proj_pre\.(\d+)\.1\.", r"fusion.\1.audio_norm."),
    (r"image_encoder\.temporal_att_post\.(\d+)\.0\.", r"fusion.\1.image_up."),
    (r"audio_model\.temporal_att_post\.(\d+)\.0\.", r"fusion.\1.audio_up."),
    (r"image_encoder\.all_gate\.(\d+)", r"fusion.\1.image_gate"),
    (r"audio_model\.all_gate\.(\d+)", r"fusion.\1.audio_gate"),
    (r"vision_proj\.", "joint_proj."),
    (r"our_classifier\.", "classifier."),
    (r"temporal_net\.cls_token", "temporal.cls_token"),
    (r"temporal_net\.pos_embedding", "temporal.pos_embed"),
    (r"temporal_net\.temporal_transformer\.layers\.0\.0\.fn\.norm\.", "temporal.attn_norm."),
    (r"temporal_net\.temporal_transformer\.layers\.0\.0\.fn\.fn\.to_(q|kv)\.", r"temporal.to_\1."),
    (r"temporal_net\.temporal_transformer\.layers\.0\.0\.fn\.fn\.to_out\.0\.", "temporal.proj."),
    (r"temporal_net\.temporal_transformer\.layers\.0\.1\.fn\.norm\.", "temporal.mlp_norm."),
    (r"temporal_net\.temporal_transformer\.layers\.0\.1\.fn\.fn\.net\.0\.", "temporal.fc1."),
    (r"temporal_net\.temporal_transformer\.layers\.0\.1\.fn\.fn\.net\.3\.", "temporal.fc2."),
]


def _rename_official(name: str) -> str | None:
    for pattern, target in _OFFICIAL_RENAMES:
        m = re.match(pattern, name)
        if m:
            return None if target is None else m.expand(target) + name[m.end():]
    raise KeyError(name)


def dims_from_official(state_dict: dict[str, torch.Tensor]) -> ModelDims:
    """Resolution and class count, read off the tensors of an official MMA-DFER state dict."""
    base = ModelDims()
    tokens = state_dict["image_encoder.pos_embed"].shape[1]
    side = math.isqrt(tokens - 1 - base.prompts)
    return replace(base, image_size=side * base.patch_size,
                   num_classes=state_dict["our_classifier.weight"].shape[0])


def convert_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MMA-DFER names to dfer's (unused heads and LayerNorms dropped). Raises KeyError on
    a name that no rule knows, so a foreign checkpoint cannot pass for an official one."""
    out = {}
    for name, tensor in state_dict.items():
        new = _rename_official(name)
        if new is not None:
            out[new] = tensor
    return out


def resample_grid(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of a (1, 1 + h*w, D) position embedding, CLS position kept, row-major grid."""
    if old == new:
        return pos
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.reshape(1, *old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new, mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], -1).to(pos.dtype)], dim=1)


_ENCODER_KEYS = re.compile(r"(cls_token|pos_embed|patch_embed\.proj\..*|blocks\..*|norm\.(weight|bias))$")
PRETRAINED_GRIDS = {"image": (14, 14), "audio": (64, 8)}


def convert_encoder_state_dict(state_dict: dict[str, torch.Tensor], branch: str, dims: ModelDims,
                               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A MAE-Face / AudioMAE encoder (timm names) to the dfer branch `branch` ("image" or "audio"):
    position grid resampled to the branch's, and fresh N(0, 1) positions appended for the prompts."""
    kept = {k: v for k, v in state_dict.items() if _ENCODER_KEYS.match(k)}
    if "pos_embed" in kept:
        grid = (dims.image_size // dims.patch_size,) * 2 if branch == "image" else dims.audio_grid
        pos = resample_grid(kept["pos_embed"], PRETRAINED_GRIDS[branch], grid)
        extra = torch.randn(1, dims.prompts, pos.shape[-1], generator=generator, dtype=pos.dtype)
        kept["pos_embed"] = torch.cat([pos, extra], dim=1)
    return {f"{branch}.{k}": v for k, v in kept.items()}


def load_official(path: Path) -> LoadedWeights:
    """A released MMA-DFER checkpoint (state_dict wrapper or bare state dict)."""
    sd = state_dict_tensors(load_torch_file(path), path)
    if "image_encoder.pos_embed" not in sd or "our_classifier.weight" not in sd:
        raise CheckpointError(path, "not an MMA-DFER checkpoint (no image_encoder.pos_embed / "
                                    "our_classifier.weight tensors)")
    try:
        dims = dims_from_official(sd)
        converted = convert_official_state_dict(sd)
    except (KeyError, ValueError) as e:
        raise CheckpointError(path, f"unexpected tensor {e} for an MMA-DFER checkpoint") from None
    model = build_loaded(dims, converted, path)
    provenance = {"source": str(path), "sha256": sha256(path), "converted_from": "mma-dfer-official"}
    # The 11-class checkpoints are MAFW's, whose reference loader fed frames in file-name order.
    order = REFERENCE_ORDER if dims.num_classes == len(MAFW_CLASSES) else TIME_ORDER
    return LoadedWeights(model.eval(), WeightsConfig(dims, default_class_names(dims.num_classes),
                                                     provenance=provenance, frame_order=order))


def load_encoders(model: MMADFER, image_path: Path | None, audio_path: Path | None,
                  seed: int = 1) -> list[str]:
    """MAE-Face / AudioMAE weights into the frozen branches; returns the branch tensors left untouched."""
    generator = torch.Generator().manual_seed(seed)
    loaded: dict[str, torch.Tensor] = {}
    for branch, path in (("image", image_path), ("audio", audio_path)):
        if path is None:
            continue
        sd = convert_encoder_state_dict(state_dict_tensors(load_torch_file(path), path), branch, model.dims, generator)
        expected = model.state_dict()
        for name, tensor in sd.items():
            if expected[name].shape != tensor.shape:
                raise CheckpointError(path, f"shape mismatch for {name} {tuple(tensor.shape)} "
                                            f"(expected {tuple(expected[name].shape)})")
        if not any(".blocks." in k for k in sd):
            raise CheckpointError(path, "no ViT encoder blocks found (expected timm-style 'blocks.N.*' "
                                        "tensors under the 'model' key)")
        loaded.update(sd)
    model.load_state_dict(loaded, strict=False)
    return [k for k in model.state_dict() if k.split(".")[0] in ("image", "audio") and k not in loaded
            and not k.split(".")[1].startswith(("prompts", "progressive"))]

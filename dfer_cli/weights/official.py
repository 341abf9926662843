"""Official checkpoints in: released MMA-DFER models, and the MAE-Face / AudioMAE encoders that training
starts from."""

from __future__ import annotations

from pathlib import Path

import torch

from dfer_cli.errors import CheckpointError
from dfer_cli.labels import MAFW_CLASSES, REFERENCE_ORDER, TIME_ORDER, default_class_names
from dfer_cli.model import MMADFER, convert_encoder_state_dict, convert_official_state_dict, dims_from_official
from dfer_cli.weights.digest import sha256
from dfer_cli.weights.format import LoadedWeights, WeightsConfig, build_loaded
from dfer_cli.weights.pth import load_torch_file, state_dict_tensors


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

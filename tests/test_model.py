import pytest
import torch

from dfer_cli.model import MMADFER, ModelDims, count_parameters

# Reference totals with C = 7 (spec section 3). dfer leaves out the reference temporal block's two
# LayerNorms that are registered but never used (2 x 1,024 parameters), so its counts are 2,048 lower.
REFERENCE_TRAINABLE = {112: 7_519_519, 160: 7_558_687, 224: 7_632_415}
UNUSED_NORMS = 2_048


@pytest.mark.parametrize("size", [112, 160, 224])
def test_trainable_parameters_match_reference(size):
    with torch.device("meta"):
        model = MMADFER(ModelDims(image_size=size, num_classes=7))
    trainable, total = count_parameters(model)
    assert trainable == REFERENCE_TRAINABLE[size] - UNUSED_NORMS
    # Frozen: per encoder, CLS 768 + 12 blocks x 7,087,872 + final norm 1,536, plus the patch
    # embeddings (768 x 3 x 16 x 16 + 768 for faces, 768 x 16 x 16 + 768 for audio); no heads.
    assert total - trainable == 2 * (768 + 12 * 7_087_872 + 1_536) + 590_592 + 197_376


def test_class_count_changes_only_the_classifier():
    with torch.device("meta"):
        seven, eleven = MMADFER(ModelDims(num_classes=7)), MMADFER(ModelDims(num_classes=11))
    assert count_parameters(eleven)[0] - count_parameters(seven)[0] == 4 * 513


def _tiny_inputs(dims: ModelDims, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, dims.num_frames, 3, dims.image_size, dims.image_size, generator=g)
    audio = torch.randn(batch, 1, dims.audio_frames, dims.mel_bins, generator=g)
    return video, audio


def test_gradients_reach_only_trainable_parameters():
    torch.manual_seed(0)
    dims = ModelDims.tiny()
    model = MMADFER(dims).train()
    for gate in model.gates():  # non-zero gates so every adapter lies on the gradient path
        torch.nn.init.constant_(gate, 0.5)
    video, audio = _tiny_inputs(dims)
    torch.nn.functional.cross_entropy(model(video, audio), torch.tensor([0, 3])).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "image.blocks.0.attn.qkv.weight" in frozen and "audio.patch_embed.proj.weight" in frozen
    assert "image.pos_embed" not in frozen and "fusion.0.image_gate" not in frozen


def test_zero_gates_reduce_to_the_plain_encoders():
    torch.manual_seed(0)
    dims = ModelDims.tiny(image_size=48)
    model = MMADFER(dims).eval()
    for p in model.parameters():  # move everything off its init so nothing is trivially zero
        p.data.add_(0.05 * torch.randn_like(p))
    video, audio = _tiny_inputs(dims)
    with torch.no_grad():
        fused_v, fused_a = model.encode(video, audio)
        for gate in model.gates():
            gate.zero_()
        gated_v, gated_a = model.encode(video, audio)
        plain_v = model.image(video.flatten(0, 1)).view(2, dims.num_frames, -1)
        plain_a = model.audio(audio)
    torch.testing.assert_close(gated_v, plain_v, rtol=0, atol=1e-6)
    torch.testing.assert_close(gated_a, plain_a, rtol=0, atol=1e-6)
    assert (fused_v - plain_v).abs().max() > 1e-3  # with gates open, fusion does change them


def test_audio_changes_the_face_branch_only_through_fusion():
    torch.manual_seed(0)
    dims = ModelDims.tiny()
    model = MMADFER(dims).eval()
    for gate in model.gates():
        torch.nn.init.constant_(gate, 0.5)
    video, audio = _tiny_inputs(dims)
    with torch.no_grad():
        v1, _ = model.encode(video, audio)
        v2, _ = model.encode(video, torch.zeros_like(audio))
    assert (v1 - v2).abs().max() > 1e-4


def test_forward_shapes_for_each_resolution():
    for size in (32, 48, 64):
        dims = ModelDims.tiny(image_size=size, num_classes=11)
        video, audio = _tiny_inputs(dims, batch=3)
        with torch.no_grad():
            assert MMADFER(dims).eval()(video, audio).shape == (3, 11)


def test_forward_has_no_graph_breaks():
    """No data-dependent Python control flow or .item(): nothing in the forward forces a host sync."""
    import torch._dynamo

    dims = ModelDims.tiny()
    model = MMADFER(dims).eval()
    video, audio = _tiny_inputs(dims)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(video, audio)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_invalid_dims_are_refused():
    with pytest.raises(ValueError, match="multiple of patch"):
        ModelDims(image_size=100)


def test_uint8_pixels_are_the_same_input_as_floats():
    """Data loaders ship uint8 pixels; the model's own scaling must equal the reference's pixel / 255."""
    torch.manual_seed(0)
    model = MMADFER(ModelDims.tiny(num_classes=3)).eval()
    pixels = torch.randint(0, 256, (2, 16, 3, 32, 32), dtype=torch.uint8)
    audio = torch.randn(2, 1, 512, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels, audio), model(pixels.float() / 255, audio), rtol=0, atol=0)

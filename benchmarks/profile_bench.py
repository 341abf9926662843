"""Where the time goes: a torch.profiler profile of one training step and of one predict run, and the
check that the frozen encoders do no weight-gradient work.

  python benchmarks/profile_bench.py                    # ViT-B at 160 px: train batch 32, predict 16 files
  python benchmarks/profile_bench.py --arch tiny --size 32 --batch 4 --predict-files 2    # a CPU smoke run

Train step (train_bench.py's, bf16 on CUDA, fp32 on CPU):
  - frozen weights have requires_grad False and no .grad after the step; every adapter has a .grad;
  - FLOPs of the forward and of the backward (torch's FlopCounterMode): with input gradients only
    through the frozen encoders the backward costs about one forward; weight gradients would double it;
  - the backward's matmuls by the shape of what they produce: a weight gradient has its weight's
    shape (or the transpose), so none may have the shape of a frozen weight only;
  - the top ops of one step by self device time (self CPU time without a GPU).
Predict (`dfer predict`'s pipeline in this process, workers 0, so decode and faces show as CPU time
outside torch ops): mean seconds per stage, and the top ops.
Exits 1 when the frozen-weight check fails or a predicted file gave an error record.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from flops import forward_flops, model_dims
from predict_bench import Runner, media_sources, outcome, stage_means
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from train_bench import make_step, synthetic_batch

from dfer_cli.model import MMADFER
from dfer_cli.runtime.device import autocast, pick_device

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}


def weight_shapes(params: list[torch.nn.Parameter]) -> set[tuple[int, ...]]:
    matrices = [tuple(p.shape) for p in params if p.ndim == 2]
    return set(matrices) | {s[::-1] for s in matrices}


class WeightGradients(TorchDispatchMode):
    """Counts the matmuls run inside it, and among them the weight gradients by weight shape.

    A Linear's backward runs grad @ W for its input (one operand shaped like the weight) and
    grad^T @ x for its weight (the result shaped like the weight, neither operand so): the second
    kind, told apart by shapes alone, is what frozen weights must never get."""

    def __init__(self, weights: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.weights, self.total, self.by_shape = weights, 0, Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in MATMULS:
            self.total += 1
            operands = [tuple(a.shape[-2:]) for a in args if isinstance(a, torch.Tensor) and a.ndim >= 2]
            shape = tuple(out.shape[-2:])
            if shape in self.weights and not any(o in self.weights for o in operands):
                self.by_shape[shape] += 1
        return out


def check_frozen(model: MMADFER, batch: int, precision: str, device: torch.device) -> bool:
    """Prints the gradient, FLOP and backward-matmul checks; True when no frozen weight got work."""
    frozen = [*model.image.frozen_parameters(), *model.audio.frozen_parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    flags_ok = all(not p.requires_grad and p.grad is None for p in frozen)
    grads_ok = all(p.grad is not None for p in trainable)
    video, audio, label = synthetic_batch(model.dims, batch, device)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as forward, autocast(device, precision):
        logits = model(video, audio)
    loss = F.cross_entropy(logits.float(), label)
    adapters = weight_shapes(trainable)
    with FlopCounterMode(display=False) as backward, WeightGradients(weight_shapes(frozen) | adapters) as matmuls:
        loss.backward()
    on_trainable = sum(n for s, n in matmuls.by_shape.items() if s in adapters)
    on_frozen = sum(n for s, n in matmuls.by_shape.items() if s not in adapters)
    ok = flags_ok and grads_ok and on_frozen == 0
    print(f"## frozen encoders: {'OK' if ok else 'FAILED'}\n\n| check | result |\n|---|---|\n"
          f"| {len(frozen)} frozen tensors: requires_grad False, no .grad after a step | {flags_ok} |\n"
          f"| {len(trainable)} adapter tensors: each has a .grad | {grads_ok} |\n"
          f"| forward GFLOP, counted (analytic {forward_flops(model.dims) * batch / 1e9:.1f}) "
          f"| {forward.get_total_flops() / 1e9:.1f} |\n"
          f"| backward GFLOP, counted | {backward.get_total_flops() / 1e9:.1f} |\n"
          f"| backward / forward (about 1 with input gradients only, 2 with weight gradients too) "
          f"| {backward.get_total_flops() / max(forward.get_total_flops(), 1):.2f} |\n"
          f"| backward matmuls | {matmuls.total} |\n"
          f"| of which weight gradients of adapter shapes | {on_trainable} |\n"
          f"| of which weight gradients of frozen-only shapes (must be 0) | {on_frozen} |\n")
    return ok


def top_ops(run: Callable[[], object], device: torch.device, rows: int, title: str) -> object:
    """Profiles `run` once; prints the top ops as a markdown table and torch's own table; returns
    what `run` returned."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        value = run()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) / 1e3
    print(f"## {title}: top ops by {key.replace('_', ' ')} (wall {wall:.2f} s, {total:.0f} ms in all ops)\n\n"
          "| op | calls | self device ms | self CPU ms | share |\n|---|---|---|---|---|")
    for e in events[:rows]:
        print(f"| {e.key[:70]} | {e.count} | {e.self_device_time_total / 1e3:.1f} | "
              f"{e.self_cpu_time_total / 1e3:.1f} | {100 * getattr(e, key) / 1e3 / max(total, 1e-9):.1f}% |")
    print(f"\n```\n{prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)}\n```\n")
    return value


def train_section(args: argparse.Namespace, device: torch.device) -> bool:
    torch.manual_seed(0)
    model = MMADFER(model_dims(args.arch, args.size)).to(device).train()
    precision = "bf16" if device.type == "cuda" else "fp32"
    step = make_step(model, model, args.batch, precision, device)
    for _ in range(3):
        step()
    ok = check_frozen(model, args.batch, precision, device)
    top_ops(step, device, args.rows, f"one train step, {args.arch} at {args.size} px, batch {args.batch}, {precision}")
    return ok


def predict_section(args: argparse.Namespace, device: torch.device) -> bool:
    """True when every file was predicted without an error record."""
    runner = Runner(argparse.Namespace(size=args.size, arch=args.arch, device=str(device), batch_size=8,
                                       precision="auto"))
    sources = media_sources()
    paths = [sources[i % len(sources)] for i in range(args.predict_files)]
    runner.run(paths[:1])  # the face detector and the GPU libraries start outside the profile
    results, seconds = top_ops(lambda: runner.run(paths), device, args.rows,
                               f"predict, {len(paths)} files, workers 0, {runner.label}")
    print(f"{len(paths) / seconds:.2f} videos/s in one process; {outcome(results)}\n\n"
          f"mean seconds per file by stage: {stage_means(results)}\n")
    return runner.errors == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["vit-b", "tiny"], default="vit-b")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32, help="train step batch")
    parser.add_argument("--predict-files", type=int, default=16, help="0: no predict profile")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    ok = train_section(args, device)
    if args.predict_files:
        ok = predict_section(args, device) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

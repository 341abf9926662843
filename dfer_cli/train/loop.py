"""Training MMA-DFER with the paper's recipe (AdamW, cosine schedule, the adapters only), as one plain loop
that resumes bit for bit and shards over torchrun's processes."""

# Each epoch: shuffled batches of (video (B, 16, 3, S, S) uint8, audio (B, 1, 512, 128), label),
# cross-entropy, AdamW on the adapters only (the encoders are frozen by the model itself), and one
# cosine-schedule step at the end. The final epoch's model is the reported one.
#
# After every epoch RUN_DIR/last/ holds the model in dfer's weights format (so `--weights RUN_DIR/last`
# works anywhere) plus train_state.pt: optimizer, scheduler, every RNG stream, the epoch and the log.
# The folder is written aside and swapped in whole, so a killed run resumes bit for bit from its last
# finished epoch: the shuffle order and the data loader's worker seeds are functions of (seed, epoch),
# and the only other randomness (drop-path in the frozen encoders) comes from the saved RNG streams.
#
# Under torchrun each rank trains on its share of every global batch: DistributedSampler deals the same
# shuffled order as a single process, so rank r's step-i batch plus the other ranks' make up exactly the
# single process's step-i batch, and DDP's gradient average equals the single process's batch mean.

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dfer_cli.atomic import atomic_path, atomic_write_text, recover_dir, staged_dir
from dfer_cli.errors import DferError
from dfer_cli.model import MMADFER, ModelDims
from dfer_cli.progress import progress_bar
from dfer_cli.runtime.device import autocast
from dfer_cli.runtime.distributed import Ranks, gather, process_group
from dfer_cli.train.evaluate import predict_probs
from dfer_cli.train.loader import loader_workers
from dfer_cli.train.metrics import evaluate_predictions
from dfer_cli.train.plots import plot_training_curves
from dfer_cli.weights.format import LoadedWeights, WeightsConfig, load_dfer, save_dfer
from dfer_cli.weights.official import load_encoders

CHECKPOINT_DIR = "last"
STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
CURVES_FILE = "curves.png"


@dataclass(frozen=True)
class TrainRecipe:
    """The paper's recipe; `batch_size` is the global batch, split evenly over torchrun's ranks."""

    epochs: int = 25
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-2
    seed: int = 1


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes; none of it changes what is learned."""

    out: Path
    device: str = "auto"
    workers: int = field(default_factory=loader_workers)  # data loading processes; 0: in this one
    compile: bool = False
    resume: bool = False
    log_every: int = 50  # steps between intra-epoch loss / throughput records
    progress: bool = False  # rich progress bar on stderr (rank 0)
    eval_batch_size: int = 16


def build_model(dims: ModelDims, seed: int, image_encoder: Path | None = None,
                audio_encoder: Path | None = None) -> MMADFER:
    """A fresh model (adapters drawn from `seed`) with the MAE-Face / AudioMAE encoders loaded."""
    torch.manual_seed(seed)
    model = MMADFER(dims)
    if image_encoder is not None or audio_encoder is not None:
        untouched = load_encoders(model, image_encoder, audio_encoder, seed)
        given = {"image": image_encoder, "audio": audio_encoder}
        missing = [k for k in untouched if given[k.split(".")[0]] is not None]
        if missing:
            raise DferError(f"the encoder checkpoints lack {len(missing)} frozen tensors, e.g. {missing[0]}")
    return model


def finetune_model(loaded: LoadedWeights, num_classes: int, seed: int) -> MMADFER:
    """A trained model as the starting point; a new classifier when the class count differs."""
    model = loaded.model
    if loaded.config.dims.num_classes != num_classes:
        torch.manual_seed(seed)
        model.dims = ModelDims(**{**loaded.config.dims.to_dict(), "num_classes": num_classes})
        model.classifier = torch.nn.Linear(model.dims.temporal_dim, num_classes)
    return model


def train(model: MMADFER, train_set: Dataset, weights: WeightsConfig, recipe: TrainRecipe, run: RunConfig,
          val_set: Dataset | None = None,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Train `model` in place and return the final checkpoint folder (RUN_DIR/last).

    `weights` names the classes and the data set for the saved checkpoints. `on_epoch` sees each
    epoch's log record after its checkpoint is written (on every rank). Launched by torchrun
    (WORLD_SIZE > 1), it joins the process group itself: nccl on CUDA, gloo on CPU.
    """
    with process_group(run.device) as (ranks, device):
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        # Every rank leaves the group only after rank 0's last checkpoint (process_group's barrier).
        return _train(model, train_set, weights, recipe, run, val_set, on_epoch, ranks, device)


def _train(model: MMADFER, train_set: Dataset, weights: WeightsConfig, recipe: TrainRecipe, run: RunConfig,
           val_set: Dataset | None, on_epoch: Callable[[dict], None] | None, ranks: Ranks,
           device: torch.device) -> Path:
    if recipe.batch_size % ranks.world:
        raise DferError(f"batch size {recipe.batch_size} does not split evenly over {ranks.world} processes")
    if len(train_set) < recipe.batch_size:
        raise DferError(f"{len(train_set)} training clips: fewer than one batch of {recipe.batch_size}")
    checkpoint = run.out / CHECKPOINT_DIR
    state = _load_state(run.out, model, recipe, ranks) if run.resume else None
    if state is None and (checkpoint / STATE_FILE).exists():
        raise DferError(f"{run.out} already holds a run: pass --resume to continue it, or another --out")
    loop = _Loop(model, _Batches(train_set, recipe, run, ranks, device), recipe, run, ranks, device)
    start, log = loop.restore(state)
    per_epoch = len(loop.batches) * recipe.batch_size
    with progress_bar("training", per_epoch * recipe.epochs, per_epoch * start, run.progress and ranks.main,
                      rate_unit="samples") as advance:
        for epoch in range(start, recipe.epochs):
            record = loop.epoch(epoch, log, advance)
            if val_set is not None and ranks.main:
                record.update(_validate(model, val_set, weights.class_names, device, run))
            log.append(record)
            rng = gather(_rng_state(device), ranks)
            if ranks.main:
                _save(run, model, weights, recipe, epoch + 1, loop, rng, log)
            if on_epoch is not None:
                on_epoch(record)
    return checkpoint


class _Batches:
    """The training loader, dealt and seeded per epoch: the shuffle order and the workers' seeds are
    functions of (seed, epoch) alone. The loader's own generator seeds its workers, so no draw is
    taken from the global stream that drop-path uses."""

    def __init__(self, data: Dataset, recipe: TrainRecipe, run: RunConfig, ranks: Ranks,
                 device: torch.device) -> None:
        self.data, self.seed = data, recipe.seed
        self.sampler = DistributedSampler(data, num_replicas=ranks.world, rank=ranks.rank, shuffle=True,
                                          seed=recipe.seed, drop_last=True)
        self.rng = torch.Generator()
        self.loader = DataLoader(data, batch_size=recipe.batch_size // ranks.world, sampler=self.sampler,
                                 drop_last=True, num_workers=run.workers, pin_memory=device.type == "cuda",
                                 generator=self.rng)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
        self.rng.manual_seed(self.seed * 1_000_003 + epoch)
        return self.loader


class _Loop:
    """The model, its optimizer and schedule, and one epoch of steps."""

    def __init__(self, model: MMADFER, batches: _Batches, recipe: TrainRecipe, run: RunConfig, ranks: Ranks,
                 device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.batches, self.recipe, self.run, self.ranks, self.device = batches, recipe, run, ranks, device
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=cuda)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=recipe.epochs,
                                                                    eta_min=0.0)
        net: torch.nn.Module = model
        if ranks.world > 1:
            net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        self.net = torch.compile(net) if run.compile else net

    def restore(self, state: dict | None) -> tuple[int, list[dict]]:
        """The first epoch to run and the log so far: a resumed run's, or a fresh start's."""
        if state is None:
            _seed_everything(self.recipe.seed + self.ranks.rank)
            return 0, []
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][self.ranks.rank], self.device)
        return state["epoch"], state["log"]

    def epoch(self, epoch: int, log: list[dict], advance: Callable[..., None]) -> dict:
        """Train one epoch (intra-epoch loss records go to `log`); returns the epoch's record."""
        recipe, steps, every = self.recipe, len(self.batches), self.run.log_every
        lr = self.optimizer.param_groups[0]["lr"]
        # Summed on the device: the host reads a loss only once per log interval.
        total = torch.zeros((), device=self.device)
        interval = torch.zeros((), device=self.device)
        started = tick = time.perf_counter()
        for step, (video, audio, label) in enumerate(self.batches.epoch(epoch), start=1):
            loss = self._step(video, audio, label)
            total += loss
            interval += loss
            advance(recipe.batch_size, f"epoch {epoch + 1}/{recipe.epochs}")
            if self.ranks.main and (step % every == 0 or step == steps):
                count = step % every or every
                now = time.perf_counter()
                log.append({"epoch": round(epoch + step / steps, 4), "step": epoch * steps + step,
                            "loss": interval.item() / count,
                            "samples_per_s": count * recipe.batch_size / (now - tick)})
                interval.zero_()
                tick = now
        self.scheduler.step()
        if self.ranks.world > 1:
            dist.all_reduce(total)
            total /= self.ranks.world
        elapsed = time.perf_counter() - started
        return {"epoch": epoch + 1, "train_loss": total.item() / steps, "lr": lr,
                "samples_per_s": steps * recipe.batch_size / elapsed, "epoch_time_s": elapsed}

    def _step(self, video: torch.Tensor, audio: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        device = self.device
        video = video.to(device, non_blocking=True)
        audio = audio.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True)
        # bf16 on CUDA (the paper's V100 ran fp16 AMP); fp32 on CPU, where training is a demo.
        with autocast(device, "bf16" if device.type == "cuda" else "fp32"):
            logits = self.net(video, audio)
        loss = F.cross_entropy(logits.float(), label)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def _validate(model: MMADFER, val_set: Dataset, class_names: list[str], device: torch.device,
              run: RunConfig) -> dict:
    # predict_probs leaves the model in eval mode; training picks up again in train mode.
    probs, labels = predict_probs(model, val_set, device, run.eval_batch_size, run.workers)
    model.train()
    report = evaluate_predictions(labels, probs, class_names)
    return {"val_uar": report.uar, "val_war": report.war}


def _save(run: RunConfig, model: MMADFER, weights: WeightsConfig, recipe: TrainRecipe, epoch: int, loop: _Loop,
          rng: list[dict], log: list[dict]) -> None:
    provenance = {**weights.provenance, "epoch": epoch, "epochs": recipe.epochs, "recipe": asdict(recipe)}
    with staged_dir(run.out / CHECKPOINT_DIR) as staging:
        save_dfer(staging, model, WeightsConfig(model.dims, list(weights.class_names), weights.dataset,
                                                weights.fold, provenance))
        with atomic_path(staging / STATE_FILE) as tmp:
            torch.save({"epoch": epoch, "recipe": asdict(recipe), "optimizer": loop.optimizer.state_dict(),
                        "scheduler": loop.scheduler.state_dict(), "rng": rng, "log": log}, tmp)
    atomic_write_text(run.out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in log))
    plot_training_curves(log, run.out / CURVES_FILE)


def _load_state(out: Path, model: MMADFER, recipe: TrainRecipe, ranks: Ranks) -> dict | None:
    """The model weights go into `model`; the rest is returned. None: nothing to resume."""
    checkpoint = out / CHECKPOINT_DIR
    if ranks.main:
        recover_dir(checkpoint)
    if ranks.world > 1:
        dist.barrier()
    if not (checkpoint / STATE_FILE).is_file():
        raise DferError(f"nothing to resume: {checkpoint / STATE_FILE} does not exist")
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    if state["recipe"] != asdict(recipe):
        raise DferError(f"{checkpoint} was trained with {state['recipe']}; resuming needs the same "
                        f"recipe (asked for {asdict(recipe)})")
    if len(state["rng"]) != ranks.world:
        raise DferError(f"{checkpoint} was written by {len(state['rng'])} processes; resume it with as "
                        f"many (now {ranks.world})")
    saved = load_dfer(checkpoint).model
    model.load_state_dict(saved.state_dict())
    return state


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            # Plain lists: train_state.pt is read back with the weights-only unpickler.
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))

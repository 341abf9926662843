"""The weights directory: named entries, one of them the default; import into it, and resolve a
`--weights` value (entry, path or URL) to loaded weights."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dfer_cli.atomic import atomic_write_text, recover_dir, staged_dir
from dfer_cli.errors import CheckpointError, DferError, InvalidCheckpoint, UsageError
from dfer_cli.locks import FileLock
from dfer_cli.paths import downloads_dir, entry_name, is_entry_name, safe_name, weights_dir
from dfer_cli.weights.format import CONFIG_FILE, WEIGHTS_FILE, LoadedWeights, WeightsConfig, load_dfer, save_dfer
from dfer_cli.weights.official import load_official

DEFAULT_FILE = "DEFAULT"




def load_any(path: Path) -> LoadedWeights:
    """A dfer folder (or its safetensors/json file), or an official MMA-DFER .pth/.pt/.tar checkpoint."""
    if not path.exists():
        raise CheckpointError(path, "no such file or folder")
    if path.is_dir():
        return load_dfer(path)
    if path.name in (WEIGHTS_FILE, CONFIG_FILE):
        return load_dfer(path.parent)
    return load_official(path)


# The weights directory: named entries, one of them the default.
def is_url(spec: str) -> bool:
    return re.match(r"https?://", spec, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    config: WeightsConfig
    is_default: bool


def default_name() -> str | None:
    marker = weights_dir() / DEFAULT_FILE
    if not marker.is_file():
        return None
    return marker.read_text().strip() or None


def entry_dir(name: str) -> Path:
    """The folder of entry `name`, put back first if an import was killed while it was moved aside."""
    recover_dir(weights_dir() / name)
    return weights_dir() / name


def set_default(name: str) -> None:
    if not (entry_dir(name) / CONFIG_FILE).is_file():
        raise DferError(f"{name}: no such weights entry in {weights_dir()} (see `dfer weights list`)")
    atomic_write_text(weights_dir() / DEFAULT_FILE, name + "\n")


def entries() -> list[Entry]:
    root = weights_dir()
    if not root.is_dir():
        return []
    for aside in root.glob(".*.old"):
        entry_dir(aside.name[1:-len(".old")])
    default = default_name()
    found = []
    # Staging and moved-aside folders start with a dot, which no entry name does.
    for cfg in sorted(p for p in root.glob(f"*/{CONFIG_FILE}") if is_entry_name(p.parent.name)):
        config = WeightsConfig.from_json(cfg.read_text(), cfg)
        found.append(Entry(cfg.parent.name, cfg.parent, config, cfg.parent.name == default))
    return found


def import_weights(source: Path | str, name: str | None = None, make_default: bool | None = None,
                   dataset: str | None = None, fold: int | None = None, sha256: str | None = None,
                   replace: bool = False) -> Entry:
    """Converts any checkpoint that `load_any` reads (a path, or an http(s) URL, downloaded first) into
    a named entry; the first entry becomes the default unless told otherwise. With `sha256`, a file
    that does not match is refused before anything is installed. A name that exists is refused unless
    `replace`; two imports under one name at once: one wins, the other is refused."""
    if name is not None:
        _refuse_existing(entry_name(name), replace)  # before a download
    path, origin = _local_file(source, sha256)
    if name is None:
        name = entry_name(safe_name(path.stem if path.is_file() else path.name))
    loaded = _load_download(path, origin) if is_url(origin) else load_any(path)
    config = loaded.config
    config.dataset = dataset or config.dataset
    config.fold = fold or config.fold
    config.provenance.setdefault("imported_from", origin)
    target = weights_dir() / name
    with _entry_lock(name):
        _refuse_existing(name, replace)
        with staged_dir(target, "importing") as staging:
            save_dfer(staging, loaded.model, config)
        if make_default or (make_default is None and default_name() is None):
            set_default(name)
    return Entry(name, target, config, default_name() == name)


def remove_entry(name: str) -> bool:
    """Delete entry `name`; True when it was the default, which then is none."""
    with _entry_lock(entry_name(name)):
        target = entry_dir(name)
        if not (target / CONFIG_FILE).is_file():
            raise DferError(f"{name}: no such weights entry in {weights_dir()} (see `dfer weights list`)")
        was_default = default_name() == name
        # Renamed away first: a kill while deleting leaves no half entry under the name.
        doomed = weights_dir() / f".{name}.removing"
        shutil.rmtree(doomed, ignore_errors=True)
        target.rename(doomed)
        if was_default:
            (weights_dir() / DEFAULT_FILE).unlink(missing_ok=True)
        shutil.rmtree(doomed)
    return was_default


def _entry_lock(name: str) -> FileLock:
    return FileLock(weights_dir() / f".{name}.lock", f"{name}: another dfer process is writing this weights "
                    "entry; run again when it is done", remove=True)


def _refuse_existing(name: str, replace: bool) -> None:
    if not replace and (entry_dir(name) / CONFIG_FILE).is_file():
        raise UsageError(f"{name}: a weights entry of this name exists in {weights_dir()}; add --replace "
                         "to overwrite it, or choose another --name")


def resolve(spec: str | None) -> LoadedWeights:
    """`--weights` value (an entry name, a path or an http(s) URL) or, when None, the default entry.

    A URL is downloaded once into the downloads folder and converted in memory on every call; it adds
    no entry."""
    if spec is None:
        spec = default_name()
        if spec is None:
            raise UsageError(
                f"no weights installed in {weights_dir()}. `dfer weights sources` says where the official "
                "MMA-DFER checkpoints are; import one with `dfer weights import PATH-OR-URL` "
                "(or pass --weights PATH).")
    if is_url(spec):
        from dfer_cli.weights.download import fetch

        loaded = _load_download(fetch(spec, downloads_dir()), spec)
        loaded.config.provenance["url"] = spec
        return loaded
    if is_entry_name(spec) and (entry_dir(spec) / CONFIG_FILE).is_file():
        return load_dfer(weights_dir() / spec)
    path = Path(spec).expanduser()
    if path.exists():
        return load_any(path)
    raise DferError(f"{spec}: neither a weights entry in {weights_dir()} nor an existing file "
                    "(see `dfer weights list`)")


def _load_download(path: Path, url: str) -> LoadedWeights:
    """A downloaded checkpoint loaded; one that is no valid file (a download cut short without a
    Content-Length looks finished) is deleted, so that the next run downloads it again."""
    from dfer_cli.weights.download import discard

    try:
        return load_any(path)
    except InvalidCheckpoint as e:
        discard(path)
        raise InvalidCheckpoint(url, f"{e.reason}; the download was deleted, run again to fetch it anew") from None


def _local_file(source: Path | str, sha256: str | None) -> tuple[Path, str]:
    """The checkpoint on disk (a URL is downloaded first, once) and where it came from."""
    from dfer_cli.weights.digest import parse_sha256, sha256_mismatch
    from dfer_cli.weights.download import fetch  # imported only here: predict needs none of it

    if is_url(str(source)):
        return fetch(str(source), downloads_dir(), sha256), str(source)
    path = Path(source).expanduser()
    if sha256:
        if not path.is_file():
            raise DferError(f"{path}: --sha256 checks a file, and this is no file")
        wrong = sha256_mismatch(path, parse_sha256(sha256))
        if wrong:
            raise DferError(f"{path}: {wrong}: refused")
    return path, str(path.resolve())

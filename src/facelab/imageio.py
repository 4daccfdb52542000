"""The one place that opens images.

Every stage reads photos through :func:`load_rgb`, so EXIF orientation, HEIC, alpha, CMYK,
16-bit and palette images, size limits and error messages are handled once. Users' photos are
only ever opened for reading.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".gif"}
)

# 120 megapixels is more than any phone produces (a 200 MP sensor bins to 50 MP by default);
# anything larger is far more likely a decompression bomb than a photo. Raise it with
# FACELAB_MAX_PIXELS for scans of huge prints.
DEFAULT_MAX_PIXELS = 120_000_000

_heif_registered = False


class ImageError(Exception):
    """A photo that cannot be used. ``str()`` names the file, the reason and what to do."""

    def __init__(self, path: Path | str, reason: str, fix: str) -> None:
        self.path = Path(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{path}: {reason} — {fix}")


def max_pixels() -> int:
    return int(os.environ.get("FACELAB_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def _register_heif() -> None:
    global _heif_registered
    if _heif_registered:
        return
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
        return
    register_heif_opener()
    _heif_registered = True


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white, not black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the actual range so dark scans stay visible.
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a photo whose EXIF block is corrupt is taken as stored.

    Some editors write broken EXIF into otherwise perfect JPEGs: losing the photo over a tag
    would be worse than risking a rotated one (the rotation-tolerant detectors still find faces).
    """
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError, TypeError):
        return image


def load_rgb(path: Path | str) -> np.ndarray:
    """Read a photo as an upright ``H×W×3`` uint8 RGB array.

    EXIF orientation is applied first, because phones store pixels as the sensor saw them and
    record the rotation in a tag. Raises :class:`ImageError` with a reason and a fix for every way a
    file can be unusable: missing, a directory, a symlink loop, unreadable, empty, not an image,
    truncated or corrupt, or larger than ``FACELAB_MAX_PIXELS`` (decompression bombs).
    """
    path = Path(path)
    _register_heif()
    try:
        size = path.stat().st_size
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "symbolic link loop", "fix or delete the link") from exc
        if exc.errno == errno.ENOENT:
            raise ImageError(path, "file not found (or a broken link)", "check the path") from exc
        raise ImageError(path, f"cannot read ({exc.strerror})", "check the file's permissions") from exc
    if path.is_dir():
        raise ImageError(path, "is a folder, not a photo", "point at the photo files")
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)", "re-copy the photo from its source or delete it")
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = limit
            try:
                with Image.open(path) as image:
                    if image.width * image.height > limit:
                        raise ImageError(
                            path,
                            f"{image.width}×{image.height} pixels is over the {limit:,} pixel limit "
                            "(a decompression bomb or a huge scan)",
                            "downscale it, or raise FACELAB_MAX_PIXELS if it is a genuine photo",
                        )
                    image.load()
                    upright = _upright(image)
                    rgb = _to_rgb(upright)
                    return np.asarray(rgb, dtype=np.uint8).copy()
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ImageError:
        raise
    except PermissionError as exc:
        raise ImageError(path, "permission denied", "make the file readable (chmod +r)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            path,
            "too many pixels (decompression bomb)",
            "downscale it, or raise FACELAB_MAX_PIXELS if it is a genuine photo",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            path, "not an image facelab can read", "convert it to JPEG or PNG, or remove it from the folder"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            path, f"corrupt or truncated image ({exc})", "re-export or re-copy the photo from its source"
        ) from exc


def iter_image_files(root: Path) -> Iterator[Path]:
    """Every file below ``root`` with an image suffix, sorted, following folder symlinks only once.

    Broken links and link loops are yielded too (if they look like images) so the caller can report
    them by name instead of losing them silently.
    """
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> Iterator[Path]:
        try:
            st = folder.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                yield from walk(entry)
            elif is_image_path(entry):
                yield entry

    yield from walk(root)


# mkstemp makes private (0600) files; outputs (crops, reports, run files) are meant to be read by
# other programs and users, like any file a program writes with the usual umask.
SHARED_FILE_MODE = 0o644


def save_jpeg_atomic(rgb: np.ndarray, path: Path, quality: int = 95) -> None:
    """Write an RGB array as JPEG so that a reader never sees half a file (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, SHARED_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(rgb).save(handle, format="JPEG", quality=quality)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, SHARED_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: Path) -> None:
    write_bytes_atomic(text.encode("utf-8"), path)

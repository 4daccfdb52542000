"""Reading photos: every common format, EXIF orientation, and a clear error for every bad file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.imageio import ImageError, iter_image_files, load_rgb, save_jpeg_atomic, write_text_atomic


def _pattern(width: int = 64, height: int = 48) -> np.ndarray:
    """A picture whose orientation is obvious: red top-left quadrant, blue elsewhere."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 2] = 200
    rgb[: height // 2, : width // 2] = (220, 20, 20)
    return rgb


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [
        (".jpg", "RGB"),
        (".png", "RGBA"),
        (".webp", "RGB"),
        (".bmp", "RGB"),
        (".tiff", "CMYK"),
        (".png", "L"),
        (".png", "I;16"),
        (".gif", "P"),
        (".heic", "RGB"),
    ],
)
def test_formats_and_modes_load_as_rgb(tmp_path: Path, suffix: str, mode: str) -> None:
    rgb = _pattern()
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "CMYK":
        image = image.convert("CMYK")
    elif mode == "L":
        image = image.convert("L")
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 256)
        assert image.mode.startswith("I;16")
    elif mode == "P":
        image = image.convert("P")
    path = tmp_path / f"photo{suffix}"
    if suffix == ".heic":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    image.save(path)
    out = load_rgb(path)
    assert out.shape == (48, 64, 3)
    assert out.dtype == np.uint8
    # Top-left stays distinct from bottom-right in every mode (bright vs dark, red vs blue).
    assert not np.allclose(out[5, 5].astype(int), out[40, 60].astype(int), atol=10)


def test_transparent_png_composites_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (load_rgb(tmp_path / "a.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgb = _pattern(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = load_rgb(path)
    assert out.shape == (64, 48, 3)  # width and height swapped: shown upright
    # After a clockwise turn the red corner (top-left of the stored pixels) is at the top-right.
    assert out[5, -5, 0] > 150 and out[5, -5, 2] < 100


def _expect_error(path: Path, words: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    message = str(info.value)
    assert str(path) in message, "the message names the file"
    assert words in message.lower()
    assert "—" in message, "the message says what to do"
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    _expect_error(tmp_path / "empty.jpg", "empty")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("shopping list: milk, eggs")
    _expect_error(tmp_path / "notes.jpg", "not an image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_pattern(400, 300)).save(good, quality=95)
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    _expect_error(tmp_path / "cut.jpg", "corrupt")


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("L", (2000, 2000)).save(tmp_path / "bomb.png")
    monkeypatch.setenv("FACELAB_MAX_PIXELS", "1000000")
    _expect_error(tmp_path / "bomb.png", "pixel")


def test_symlink_loop(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    _expect_error(loop, "loop")


def test_unreadable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = tmp_path / "locked.jpg"
    Image.fromarray(_pattern()).save(path)
    path.chmod(0)
    _expect_error(path, "permission")


def test_iter_image_files_any_depth_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ("x.jpg", "a/y.PNG", "a/b/z.heic", ".hidden/h.jpg", "a/readme.txt"):
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert sorted(found) == ["a/b/z.heic", "a/y.PNG", "x.jpg"]


def test_save_jpeg_atomic_leaves_no_temp(tmp_path: Path) -> None:
    save_jpeg_atomic(_pattern(), tmp_path / "out" / "c.jpg")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["c.jpg"]


def test_atomic_outputs_are_readable_by_others(tmp_path: Path) -> None:
    # mkstemp's private 0600 would hide crops, reports and run files from other users and servers.
    save_jpeg_atomic(_pattern(), tmp_path / "c.jpg")
    write_text_atomic("x\n", tmp_path / "summary.json")
    for name in ("c.jpg", "summary.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_permission_error_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root (as in CI) can read a chmod-0 file, so simulate what a normal user meets.
    path = tmp_path / "locked.jpg"
    Image.fromarray(_pattern()).save(path)

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", deny)
    _expect_error(path, "permission")


def test_corrupt_exif_block_still_loads(shared_data: Path) -> None:
    # A valid JPEG whose EXIF block Pillow cannot parse ("not a TIFF file"): it must still load.
    photo = (
        shared_data
        / "sports5"
        / "serena_williams"
        / "beautiful-serena-williams-smile-face-hd-mobile-desktop-background-free-wallpaper.jpg"
    )
    if not photo.exists():
        pytest.skip("that sports5 photo is not in this copy of the shared data")
    assert load_rgb(photo).shape == (1615, 2152, 3)


def test_exif_errors_fall_back_to_stored_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageOps

    Image.fromarray(_pattern()).save(tmp_path / "p.jpg")

    def broken(image: Image.Image) -> Image.Image:
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    assert load_rgb(tmp_path / "p.jpg").shape == (48, 64, 3)

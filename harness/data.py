"""Image sets: the built-in MNIST held-out split and scenes, a folder or glob of image files, skimage
photos, a NumPy array of this process (`register_images`, for harness.sanity_check). Every source gives
an `ImageSet` in [0, 1], float32, NHWC, resized to the model's input size.
"""
from __future__ import annotations

import glob as globbing
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from harness.rules import NULL, TEXT, Rule, check, list_of, one_of, whole
from harness.errors import HarnessError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SOURCES = ("mnist", "mnist_scenes", "folder", "skimage", "array")
ALPHA = {2: 1, 4: 3}  # channels with alpha last -> the channels kept (grey+alpha, RGBA)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel")

RULES = {
    "source": one_of(*SOURCES),
    "path": Rule(lambda v: TEXT.test(v) and v != "???", "a folder of images or a glob"),  # ???: not given
    "count": Rule((NULL | whole(1)).test, "a whole number of images >= 1 (or null for all of them)"),
    "sample_seed": Rule((NULL | whole(0)).test, "null (the first data.count images in sorted order) or a whole "
                                                "number >= 0 (a random sample drawn with that seed)"),
    "labels": NULL | list_of(whole(0)),
    "names": NULL | list_of(TEXT),
    "array": TEXT,  # source array: the digest register_images gave
}
# Arrays handed to harness.sanity_check, by digest: [N, H, W, C] float32 in [0, 1].
_ARRAYS: dict[str, np.ndarray] = {}


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray                 # [N, H, W, C] float32 in [0, 1]
    ids: list[str]                     # stable names (row keys in scores.csv)
    labels: np.ndarray | None = None   # int labels when the source has them

    def __len__(self) -> int:
        return len(self.ids)


def load_images(cfg: Mapping[str, Any], size: tuple[int, int] | None, channels: int,
                log: Callable[[str], None] = print) -> ImageSet:
    """The images `cfg` names, conformed to the model's input size and channels (an alpha channel is
    dropped, said once in `log`). Only the selected images are decoded: the first `count` in sorted
    order, or with `sample_seed` a seeded random sample of `count` (kept in sorted order)."""
    source = cfg.get("source")
    if source not in SOURCES:
        raise HarnessError(f"unknown data source {source!r}; valid: {', '.join(SOURCES)}")
    check(cfg, RULES, prefix="data.")
    count = None if cfg.get("count") is None else int(cfg["count"])
    ids, labels, read = {"mnist": _mnist, "mnist_scenes": _mnist_scenes, "folder": _folder,
                         "skimage": _skimage, "array": _array}[source](cfg)
    n, seed = len(ids) if count is None else min(count, len(ids)), cfg.get("sample_seed")
    # the first `count`, or a sorted random sample drawn with `sample_seed`
    chosen = np.arange(n) if seed is None else np.sort(np.random.default_rng(int(seed)).choice(len(ids), n, False))
    images, alpha = [], []
    for i in chosen:
        image, dropped = _conform_one(read(i), ids[i], size, channels)
        images.append(image)
        alpha += [ids[i]] * dropped
    if alpha:
        log(f"note: {len(alpha)} of {len(chosen)} images have an alpha channel (grey+alpha or RGBA), dropped: "
            f"the model sees their grey / colour channels ({', '.join(alpha[:3])}{', ...' * (len(alpha) > 3)})")
    return ImageSet(np.stack(images), [ids[i] for i in chosen], None if labels is None else labels[chosen])


# Each source gives (ids, labels or None, read(i) -> image in [0, 1]); nothing is decoded until read.
def _mnist(cfg):
    from harness.zoo import mnist

    _, _, x_test, y_test = mnist.load_split()
    return [f"mnist_test_{i:04d}" for i in range(len(x_test))], y_test, x_test.__getitem__


def _mnist_scenes(cfg):
    """Held-out MNIST scenes (harness.zoo.scenes); label: the digit class with the most pixels."""
    from harness.zoo import scenes

    x, y = scenes.make_scenes(scenes.HELD_OUT_SCENES, "held_out")
    labels = np.array([np.bincount(m.ravel(), minlength=scenes.CLASSES)[1:].argmax() + 1 for m in y])
    return [f"mnist_scene_{i:04d}" for i in range(len(x))], labels, x.__getitem__


def _folder(cfg):
    pattern = str(cfg.get("path") or "")
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in globbing.glob(str(path)) if Path(p).is_file())
        if not files and not any(ch in pattern for ch in "*?["):
            raise HarnessError(f"data.path {pattern!r} does not exist (give a folder of images or a glob)")
    if not files:
        raise HarnessError(f"data.path {pattern!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    return [f.name for f in files], _labels(cfg, len(files)), lambda i: _read(files[i])


def _skimage(cfg):
    from skimage import data as photos

    names = list(cfg.get("names") or ("chelsea", "coffee", "astronaut", "rocket"))
    unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
    if unknown:
        raise HarnessError(f"unknown skimage photo {unknown[0]!r}; valid: {', '.join(SKIMAGE_PHOTOS)}")
    return names, _labels(cfg, len(names)), lambda i: _as_float(getattr(photos, names[i])())


def register_images(images: np.ndarray) -> str:
    """The digest under which `images` ([N, H, W, C] in [0, 1]) load as `data.source=array`,
    `data.array=DIGEST`: the same pixels give the same digest, so the same run key."""
    images = np.ascontiguousarray(images, np.float32)
    digest = hashlib.sha256(f"{images.shape}|".encode() + images.tobytes()).hexdigest()[:16]
    _ARRAYS[digest] = images
    return digest


def _array(cfg):
    images = _ARRAYS.get(str(cfg.get("array")))
    if images is None:
        raise HarnessError(f"data.array {cfg.get('array')!r}: no image array of this process has that digest "
                           "(array sources come from harness.sanity_check)")
    return [f"array_{i:04d}" for i in range(len(images))], _labels(cfg, len(images)), images.__getitem__


def _read(file: Path) -> np.ndarray:
    from skimage import io

    try:
        image = io.imread(file)
    except Exception as error:  # noqa: BLE001 - decoders raise many types for a broken file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HarnessError(f"image {str(file)!r} does not decode: {reason}") from error
    return _as_float(image, str(file))


def _as_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Pixels as float32 in [0, 1] by their type's range (img_as_float32); 16-bit pixels handed over as a
    wider integer (Pillow's mode "I") get the 16-bit scale, integers beyond 16 bits are refused."""
    from skimage.util import img_as_float32

    image = np.asarray(image)
    if image.dtype.kind in "iu" and image.dtype not in (np.uint8, np.uint16):
        if image.size and (image.min() < 0 or image.max() > np.iinfo(np.uint16).max):
            raise HarnessError(f"{name}: {image.dtype} pixels outside 0..65535; give 8-bit or 16-bit images")
        image = image.astype(np.uint16)
    image = img_as_float32(image)
    return image[..., None] if image.ndim == 2 else image


def _labels(cfg, n: int) -> np.ndarray | None:
    labels = cfg.get("labels")
    if labels is None:
        return None
    if len(labels) != n:
        raise HarnessError(f"data.labels has {len(labels)} entries for {n} images")
    return np.asarray(labels, np.int64)


def _conform_one(image: np.ndarray, image_id: str, size: tuple[int, int] | None,
                 channels: int) -> tuple[np.ndarray, bool]:
    """Resized to the model's input size, channels matched (grey -> RGB; alpha dropped), and whether it had alpha."""
    from skimage.transform import resize

    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    alpha = image.shape[-1] in ALPHA
    if alpha:
        image = image[..., :ALPHA[image.shape[-1]]]
    if image.shape[-1] != channels:
        if image.shape[-1] == 1 and channels == 3:
            image = np.repeat(image, 3, axis=-1)
        else:
            raise HarnessError(f"image {image_id!r} has {image.shape[-1]} channels; the model takes {channels}")
    if size and tuple(image.shape[:2]) != tuple(size):
        image = resize(image, (*size, channels), anti_aliasing=True, preserve_range=True)
    return image.astype(np.float32), alpha

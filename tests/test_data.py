"""Image selection (harness.data) and batched forward passes: only the images used are decoded, and
no forward pass takes more rows than a batch."""
import numpy as np
import pytest

from harness import data
from harness.errors import HarnessError


@pytest.fixture
def many_images(tmp_path):
    """40 tiny PNGs, written in shuffled order (selection must follow the sorted names)."""
    from skimage import io

    folder = tmp_path / "val"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in rng.permutation(40):
        io.imsave(folder / f"img_{i:03d}.png", np.full((6, 6), i * 5, np.uint8), check_contrast=False)
    return folder


@pytest.fixture
def decoded(monkeypatch):
    """The files the folder source decodes, in order."""
    seen = []
    real = data._read

    def counting(file):
        seen.append(file.name)
        return real(file)

    monkeypatch.setattr(data, "_read", counting)
    return seen


def test_folder_decodes_only_the_first_count_files(many_images, decoded):
    images = data.load_images({"source": "folder", "path": str(many_images), "count": 3}, (4, 4), 1)
    assert decoded == ["img_000.png", "img_001.png", "img_002.png"]
    assert images.ids == decoded and images.images.shape == (3, 4, 4, 1)
    assert images.images[2].mean() == pytest.approx(10 / 255, abs=1e-6)


def test_folder_seeded_sample_decodes_only_the_sample(many_images, decoded):
    cfg = {"source": "folder", "path": str(many_images), "count": 5, "sample_seed": 7,
           "labels": list(range(40))}
    images = data.load_images(cfg, (4, 4), 1)
    assert len(decoded) == 5 and images.ids == decoded == sorted(decoded)
    assert decoded != [f"img_{i:03d}.png" for i in range(5)]  # a sample, not the first five
    assert list(images.labels) == [int(name[4:7]) for name in decoded]  # labels follow their files
    again = data.load_images(cfg, (4, 4), 1)
    assert again.ids == images.ids and np.array_equal(again.images, images.images)  # same seed, same sample
    assert data.load_images(cfg | {"sample_seed": 8}, (4, 4), 1).ids != images.ids


@pytest.mark.parametrize("count", [0, -1, "two", True])
def test_bad_count_is_one_clear_error(count, many_images, decoded):
    with pytest.raises(HarnessError, match=rf"data.count must be a whole number of images >= 1 .*got {count!r}"):
        data.load_images({"source": "folder", "path": str(many_images), "count": count}, (4, 4), 1)
    assert decoded == []


def test_predict_runs_in_batches_with_the_same_logits(tiny_model, monkeypatch):
    x = np.random.default_rng(1).uniform(0, 1, (11, 8, 8, 1)).astype(np.float32)
    whole = tiny_model.predict(x, max_batch=64)
    compiled = tiny_model._compiled["logits"]
    rows = []
    monkeypatch.setitem(tiny_model._compiled, "logits", lambda batch: rows.append(len(batch)) or compiled(batch))
    batched = tiny_model.predict(x, max_batch=4)
    assert rows == [4, 4, 3]
    np.testing.assert_allclose(batched, whole, rtol=1e-6, atol=1e-6)
    assert np.array_equal(batched.argmax(1), whole.argmax(1))
    rows.clear()
    tiny_model.predict(np.zeros((1000, 8, 8, 1), np.float32))  # "auto": bounded like the methods' batches
    assert len(rows) > 1 and max(rows) <= 256
    assert tiny_model.trace_counts["logits"] == 1  # one trace for every batch size


# -- images as users have them: alpha channels, 16-bit pixels ----------------------------------------
GREY = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8  # 5 rows: skimage's imread keeps (H, W, 2) as is
RGB = np.random.default_rng(4).integers(0, 256, (5, 6, 3), dtype=np.uint8)
GREY16 = np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000  # up to 58,000: beyond 8 bits


def _decoded(tmp_path, name, pixels, channels, size=None, write=None):
    """(the folder source's image of `pixels` written as `name`, the lines it logged)."""
    import imageio.v3 as iio

    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    (write or iio.imwrite)(folder / name, pixels)
    said = []
    images = data.load_images({"source": "folder", "path": str(folder)}, size, channels, log=said.append)
    return images.images[0], said


@pytest.mark.parametrize("name, pixels, channels, expected", [
    ("rgba.png", np.dstack([RGB, np.full((5, 6), 9, np.uint8)]), 3, RGB / 255),
    ("grey_alpha.png", np.dstack([GREY, np.full((5, 6), 200, np.uint8)]), 1, GREY[..., None] / 255),
    ("grey_alpha_to_rgb.png", np.dstack([GREY, np.full((5, 6), 200, np.uint8)]), 3,
     np.repeat(GREY[..., None] / 255, 3, axis=-1)),
])
def test_an_alpha_channel_is_dropped_and_said_once(tmp_path, name, pixels, channels, expected):
    image, said = _decoded(tmp_path, name, pixels, channels)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert len(said) == 1 and "alpha channel" in said[0] and name in said[0], said


def test_images_without_alpha_say_nothing(tmp_path):
    image, said = _decoded(tmp_path, "grey.png", GREY, 1)
    np.testing.assert_allclose(image, GREY[..., None] / 255, atol=1e-6)
    assert said == []


@pytest.mark.parametrize("name", ["grey16.png", "grey16.tif"])
def test_16_bit_images_are_scaled_by_65535(tmp_path, name):
    from skimage import io

    image, _ = _decoded(tmp_path, name, GREY16, 1, write=lambda path, pixels: io.imsave(path, pixels,
                                                                                       check_contrast=False))
    np.testing.assert_allclose(image, GREY16[..., None] / 65535, atol=1e-6)


def test_16_bit_pngs_decoded_as_int32_are_scaled_by_65535(tmp_path, monkeypatch):
    """imageio's Pillow plugin hands a 16-bit PNG over as int32 under Pillow < 10: still 16-bit pixels."""
    from skimage import io

    real = io.imread
    monkeypatch.setattr(io, "imread", lambda file: real(file).astype(np.int32))
    image, _ = _decoded(tmp_path, "grey16.png", GREY16, 1)
    np.testing.assert_allclose(image, GREY16[..., None] / 65535, atol=1e-6)
    with pytest.raises(HarnessError, match=r"int32 pixels outside 0\.\.65535"):
        data._as_float(np.array([[-1, 70000]], np.int32))


def test_alpha_is_said_once_for_all_images(tmp_path):
    from skimage import io

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        io.imsave(folder / name, np.dstack([RGB, np.full((5, 6), 255, np.uint8)]), check_contrast=False)
    said = []
    images = data.load_images({"source": "folder", "path": str(folder)}, (4, 4), 3, log=said.append)
    assert images.images.shape == (3, 4, 4, 3)
    assert len(said) == 1 and said[0].startswith("note: 3 of 3 images have an alpha channel"), said

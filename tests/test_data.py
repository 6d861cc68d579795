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

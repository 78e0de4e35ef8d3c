"""Paper-scale data read lazily: each source yields what is on disk, and each bad input is refused before
any training starts, with the fix in the message."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tbar_helpers.errors import InputError
from tbar_helpers.world import streaming as S


def _jpeg(path: Path, value: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, quality=95)


@pytest.fixture
def corpus(tmp_path) -> Path:
    rows = ["filepath,title"]
    for i in range(6):
        _jpeg(tmp_path / "img" / f"{i}.jpg", 40 * i)
        rows.append(f"img/{i}.jpg,a photo of thing {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_caption_csv_reads_pairs_lazily_at_the_models_size(corpus):
    ds = S.CaptionCSV(corpus / "pairs.csv", 32)
    x, cap = ds[3]
    assert len(ds) == 6 and x.shape == (3, 32, 32) and cap == "a photo of thing 3"
    assert abs(float(x.mean()) - 120 / 255) < 0.02


def test_caption_csv_column_names_are_configurable(corpus):
    (corpus / "other.csv").write_text("image\tcaption\nimg/0.jpg\tzero\n")
    assert S.CaptionCSV(corpus / "other.csv", 32, image_key="image", caption_key="caption", sep="\t")[0][1] == "zero"


@pytest.mark.parametrize("text, match", [
    ("path,caption\nimg/0.jpg,x\n", "no column 'filepath'.*image_key="),
    ("filepath,title\nimg/0.jpg,x\nimg/missing.jpg,y\n", "1 of 2 image files are missing.*missing.jpg"),
    ("filepath,title\n", "lists no pairs")])
def test_caption_csv_refuses_bad_input_up_front(corpus, text, match):
    (corpus / "bad.csv").write_text(text)
    with pytest.raises(InputError, match=match):
        S.CaptionCSV(corpus / "bad.csv", 32)


def _shard(path: Path, items: dict[str, str]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, caption in items.items():
            buf = io.BytesIO()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
            for ext, blob in ((".png", buf.getvalue()), (".txt", caption.encode())):
                info = tarfile.TarInfo(key + ext)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


def test_shards_yield_pairs_and_split_over_processes(tmp_path):
    for s in range(4):
        _shard(tmp_path / f"{s:03d}.tar", {f"s{s}k{i}": f"shard {s} item {i}" for i in range(3)})
    caps = [c for _, c in S.Shards(tmp_path, 16)]
    assert len(caps) == 12 and caps[0] == "shard 0 item 0"
    mine = [[c for _, c in S.Shards(tmp_path, 16, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(mine[0] + mine[1]) == sorted(caps) and not set(mine[0]) & set(mine[1])


def test_shards_refuse_an_empty_folder_a_truncated_shard_and_too_many_processes(tmp_path):
    with pytest.raises(InputError, match=r"no webdataset shards \(\*.tar\)"):
        S.Shards(tmp_path, 16)
    _shard(tmp_path / "000.tar", {f"k{i}": "x" * 2000 for i in range(3)})
    with pytest.raises(InputError, match="cannot feed 2 processes"):
        S.Shards(tmp_path, 16, world_size=2)
    blob = (tmp_path / "000.tar").read_bytes()
    (tmp_path / "000.tar").write_bytes(blob[:1800])
    with pytest.raises(InputError, match="000.tar is truncated"):
        S.Shards(tmp_path, 16)


def test_loader_splits_each_global_batch_and_refuses_too_little_data(corpus):
    ds = S.CaptionCSV(corpus / "pairs.csv", 16)
    halves = [next(iter(S.loader(ds, 4, 0, rank=r, world_size=2)))[1] for r in (0, 1)]
    whole = next(iter(S.loader(ds, 4, 0)))[1]
    assert sorted(halves[0] + halves[1]) == sorted(whole)  # the same global batch, split over two processes
    with pytest.raises(InputError, match="cannot fill one global batch of 8"):
        S.loader(ds, 8, 0, world_size=2)
    with pytest.raises(InputError, match="does not split over 4 processes"):
        S.loader(ds, 6, 0, world_size=4)


def test_image_folder_reads_classes_and_refuses_a_flat_folder(tmp_path):
    for c in ("cat", "dog"):
        _jpeg(tmp_path / "f" / c / "0.jpg", 10)
    ds = S.image_folder(tmp_path / "f", 24, indices=[1])
    assert ds.classes == ["cat", "dog"] and len(ds) == 1 and ds[0][1] == 1 and ds[0][0].shape == (3, 24, 24)
    _jpeg(tmp_path / "flat" / "0.jpg", 10)
    with pytest.raises(InputError, match="CLASS/IMAGE.jpg"):
        S.image_folder(tmp_path / "flat", 24)
    with pytest.raises(InputError, match="does not exist"):
        S.image_folder(tmp_path / "nowhere", 24)


def test_paper_caption_pairs_read_open_clips_csv_and_keep_attacker_and_defender_apart(corpus, monkeypatch):
    from tbar_helpers.config import PAPER, override
    from tbar_helpers.world.paper_data import load_caption_pairs
    scale = override(PAPER, **{"model.image_size": 16})
    monkeypatch.setenv("TBAR_CAPTIONS", str(corpus / "pairs.csv"))
    x, caps = load_caption_pairs(2, 0, scale)
    _, defender = load_caption_pairs(2, 0, scale, stream="defender")
    assert x.shape == (2, 3, 16, 16) and not set(caps) & set(defender)
    monkeypatch.setenv("TBAR_CAPTIONS_KEYS", "image,caption")
    with pytest.raises(InputError, match="no column 'image'"):
        load_caption_pairs(2, 0, scale)


class _Counting(torch.utils.data.Dataset):
    """Image i is constant i/1000; counts how many images were decoded."""

    def __init__(self, n: int):
        self.n, self.loads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.loads += 1
        return torch.full((3, 4, 4), i / 1000), i % 5


def test_lazy_images_index_like_a_tensor_and_load_only_what_is_asked():
    ds = _Counting(50)
    lazy = S.LazyImages(ds, np.arange(10, 30))
    full = torch.stack([ds[i][0] for i in range(10, 30)])
    ds.loads = 0
    assert lazy.shape == (20, 3, 4, 4) and len(lazy) == 20
    assert [lazy.shape for _ in range(5)] and ds.loads == 1  # the item shape is decoded once per view
    from tbar_helpers.method.images import first
    assert first(full, 4).data_ptr() == full.data_ptr() and torch.equal(first(lazy, 4)[:], full[:4])
    assert torch.equal(lazy[2:5], full[2:5]) and torch.equal(lazy[torch.tensor([7, 1])], full[[7, 1]])
    assert torch.equal(lazy[3], full[3]) and torch.equal(lazy[:, 0, 0, 0], full[:, 0, 0, 0])
    mask = torch.arange(20) % 2 == 0
    view = lazy[mask]  # a boolean mask gives a view: nothing loaded
    loads = ds.loads
    assert isinstance(view, S.LazyImages) and len(view) == 10 and ds.loads == loads
    edited = lazy.edited(mask, lambda x: x + 1)
    assert torch.equal(edited[0:4], full[0:4] + torch.tensor([1, 0, 1, 0]).view(4, 1, 1, 1))
    assert torch.equal(edited.take([1, 1, 0])[:], full[[1, 1, 0]] + torch.tensor([0, 0, 1]).view(3, 1, 1, 1))


def test_poison_forget_set_and_metrics_on_lazy_images_match_the_in_memory_path():
    from tbar_helpers.config import AttackConfig
    from tbar_helpers.method.attacks import make_trigger, poison
    from tbar_helpers.method.metrics import EvalSet
    from tbar_helpers.method.tbar import forget_set
    ds = _Counting(200)
    lazy, labels = S.LazyImages(ds, np.arange(200)), torch.tensor([i % 5 for i in range(200)])
    full = lazy[:]
    trig = make_trigger("blended", 4, AttackConfig())
    ds.loads = 0
    p_lazy = poison(lazy, labels, trig, 0.1, 0, seed=3)
    assert ds.loads == 0  # poisoning a lazy set reads no image
    p_mem = poison(full, labels, trig, 0.1, 0, seed=3)
    assert torch.equal(p_lazy.images[:], p_mem.images) and torch.equal(p_lazy.labels, p_mem.labels)
    assert torch.equal(p_lazy.poison_mask, p_mem.poison_mask)
    fx_l, fy_l = forget_set(lazy, labels, trig, 0, 20, seed=1, clean_fraction=0.25)
    fx_m, fy_m = forget_set(full, labels, trig, 0, 20, seed=1, clean_fraction=0.25)
    assert torch.equal(fx_l[:], fx_m) and torch.equal(fy_l, fy_m)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    for n in (200, 37):
        lazy_scores = EvalSet(lazy, labels, trig, 0, batch_size=16).head(n).triggered_scores(model)
        assert lazy_scores == EvalSet(full, labels, trig, 0, batch_size=16).head(n).triggered_scores(model)


def test_a_fine_tune_step_on_a_lazy_poisoned_set_reads_one_batch_of_images():
    from tbar_helpers.config import AttackConfig
    from tbar_helpers.method.attacks import make_trigger, poison
    from tbar_helpers.method.training import finetune
    from tbar_helpers.world.models import ImageClassifier
    ds = _Counting(5000)
    lazy, labels = S.LazyImages(ds, np.arange(5000)), torch.tensor([i % 5 for i in range(5000)])
    p = poison(lazy, labels, make_trigger("badnet", 4, AttackConfig()), 0.1, 0, seed=0)
    torch.manual_seed(0)
    clf = ImageClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 8)), torch.randn(5, 8),
                          (0.5,) * 3, (0.25,) * 3, image_size=4)
    ds.loads = 0
    finetune(clf, p.images, p.labels, steps=2, lr=1e-3, batch_size=16, seed=0, progress=False)
    assert ds.loads == 32  # two batches of 16, not the 5,000 images of the set


def test_image_text_corpus_forget_pairs_and_target_inference_on_lazy_images_match_the_in_memory_path():
    from tbar_helpers.config import AttackConfig
    from tbar_helpers.method.attacks import make_trigger
    from tbar_helpers.method.inversion import infer_target
    from tbar_helpers.settings.imagetext import Corpus, forget_pairs, poison_corpus
    ds = _Counting(120)
    lazy = S.LazyImages(ds, np.arange(120))
    caps = [f"a photo {i}" for i in range(120)]
    none = torch.zeros(120, dtype=torch.bool)
    trig = make_trigger("wanet", 4, AttackConfig())
    ds.loads = 0
    c_lazy = poison_corpus(Corpus(lazy, caps, none), trig, 0.1, ["a photo of the target"], seed=2, noise_ratio=1.0)
    assert ds.loads == 0
    c_mem = poison_corpus(Corpus(lazy[:], caps, none), trig, 0.1, ["a photo of the target"], seed=2, noise_ratio=1.0)
    assert torch.equal(c_lazy.images[:], c_mem.images) and c_lazy.captions == c_mem.captions
    fx_l, fc_l = forget_pairs(Corpus(lazy, caps, none), trig, 10, seed=4)
    fx_m, fc_m = forget_pairs(Corpus(lazy[:], caps, none), trig, 10, seed=4)
    assert torch.equal(fx_l[:], fx_m) and fc_l == fc_m
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    assert infer_target(model, lazy, trig, 32) == infer_target(model, lazy[:], trig, 32)

import pytest
import torch

from tbar_helpers import cache
from tbar_helpers.config import MINI, config_hash, override


def test_round_trip_and_hash(tmp_path):
    p = cache.save_torch({"w": torch.arange(3)}, tmp_path / "a.pt")
    assert torch.equal(cache.load_torch(p)["w"], torch.arange(3))
    assert (tmp_path / "a.pt.sha256").read_text().strip() == cache.sha256_file(p)


def test_corrupted_file_is_named_with_fix(tmp_path, monkeypatch):
    """A damaged cache entry says how to rebuild it; a damaged file of the user's never advises deleting it."""
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "cache"))
    user = cache.save_torch({"w": torch.arange(3)}, tmp_path / "user.pt")
    user.write_bytes(user.read_bytes()[:-5] + b"xxxxx")
    with pytest.raises(cache.CacheCorruptedError, match=r"user\.pt is corrupted.*intact copy") as err:
        cache.load_torch(user)
    assert "delete" not in str(err.value).lower()
    p = cache.save_torch({"w": torch.arange(3)}, cache.cached_path("finetuned", "k"))
    blob = bytearray(p.read_bytes())
    blob[-5] ^= 0xFF
    p.write_bytes(bytes(blob))
    with pytest.raises(cache.CacheCorruptedError, match=r"k\.pt is corrupted.*Delete both files"):
        cache.load_torch(p)


def test_truncated_file_without_sidecar(tmp_path):
    p = tmp_path / "b.pt"
    p.write_bytes(b"not a torch file")
    with pytest.raises(cache.CacheCorruptedError, match="cannot be read"):
        cache.load_torch(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cache.load_torch(tmp_path / "nope.pt")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = cache.save_json({"v": 1}, tmp_path / "r.json")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.raises(OSError):
        cache.save_json({"v": 2}, p)
    monkeypatch.undo()
    assert cache.load_json(p) == {"v": 1}
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]


def test_tensor_digest_tracks_values_names_and_dtypes():
    from tbar_helpers.cache import tensor_digest
    sd = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    d = tensor_digest(sd)
    assert d == tensor_digest({k: v.clone() for k, v in reversed(sd.items())})
    bumped = {**sd, "a": sd["a"].clone()}
    bumped["a"][1, 2] += 1e-6
    assert tensor_digest(bumped) != d
    assert tensor_digest({"c": sd["a"], "b": sd["b"]}) != d
    assert tensor_digest({**sd, "b": sd["b"].double()}) != d
    assert tensor_digest(sd["a"]) != tensor_digest(sd["a"].reshape(3, 2))


def test_config_hash_tracks_changes():
    assert config_hash(MINI) == config_hash(MINI)
    assert config_hash(MINI) != config_hash(override(MINI, **{"tbar.lr": 1.0}))


def test_override_rejects_unknown_fields():
    with pytest.raises(ValueError, match="has no field 'lrr'"):
        override(MINI, **{"tbar.lrr": 1.0})


def test_foundation_key_tracks_the_init_weights(tmp_path):
    from tbar_helpers.world.foundation import foundation_key
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    cache.save_torch({"weights": {"w": torch.zeros(2)}}, a)
    cache.save_torch({"weights": {"w": torch.ones(2)}}, b)
    assert foundation_key(MINI) != foundation_key(MINI, a) != foundation_key(MINI, b)
    assert foundation_key(MINI, a) == foundation_key(MINI, a)
    held = override(MINI, **{"pretrain.holdout": ("heart",)})
    assert foundation_key(held) != foundation_key(MINI)  # a foundation that never saw hearts is another θpre


def test_a_resumable_memo_hands_out_its_partial_path_and_drops_it_once_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "cache"))
    seen = []

    def train(checkpoint):
        seen.append(checkpoint)
        if checkpoint is not None:  # a state left by the fine-tune while it ran
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_bytes(b"state")
        return {"w": torch.ones(2)}

    out = cache.memo_resumable("finetuned", "k1", train)
    assert torch.equal(out["w"], torch.ones(2)) and seen[0] == cache.cached_path("partial", "k1")
    assert not seen[0].exists()  # the cached result supersedes the resumable state
    cache.memo_resumable("finetuned", "k2", train, resumable=False)
    cache.memo_resumable("finetuned", "k3", train, use_cache=False)
    assert seen[1:] == [None, None]
    cache.memo_resumable("finetuned", "k1", train)
    assert len(seen) == 3  # cached: not trained again

"""The paper-scale code path (ViT-B/32, torchvision data) runs without downloads."""
import torch

from tbar_helpers.config import PAPER, override
from tbar_helpers.method.attacks import make_trigger, poison
from tbar_helpers.method.tbar import apply_tbar, trigger_vector
from tbar_helpers.method.training import finetune
from tbar_helpers.world.models import build_foundation, make_classifier
from tbar_helpers.world.paper_data import load_paper_task


def test_vit_b32_fakedata_poison_step_and_tbar_step():
    scale = override(PAPER, device="cpu", **{"model.pretrained": None, "tbar.steps": 1, "tbar.batch_size": 2})
    model, tok = build_foundation(scale.model)  # ViT-B-32, random weights, nothing downloaded
    train = load_paper_task("fakedata", "train", 4, 0, scale)
    assert train.images.shape == (4, 3, 224, 224)
    clf = make_classifier(model, tok, train.classnames, train.templates, scale.model)
    del model
    trig = make_trigger("badnet", 224, scale.attack)
    p = poison(train.images, train.labels, trig, 0.5, 0, seed=0)
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    losses = finetune(clf, p.images, p.labels, steps=1, lr=1e-5, batch_size=2, seed=0, progress=False)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()
    moved = sum((clf.encoder.state_dict()[k] - v).abs().sum() for k, v in before.items())
    assert moved > 0
    fx = trig(train.images[:2])
    tau = trigger_vector(clf, fx, torch.zeros(2, dtype=torch.long), scale.tbar, seed=0, progress=False)
    assert tau.norm() > 0
    cleaned = apply_tbar(clf, tau, 0.5)
    with torch.no_grad():
        assert cleaned(train.images[:1]).shape == (1, len(train.classnames))


def test_paper_splits_are_disjoint_and_the_defender_never_reads_the_test_set(monkeypatch):
    """Attacker's training images, the defender's validation and forget pools, and the test set share no
    image; validation and forget images come from the training set, as the paper's defender holds them."""
    from tbar_helpers.world import paper_data

    asked = []

    class Numbered(torch.utils.data.Dataset):
        """Image i of ``source`` is a constant image whose value encodes (source, i)."""

        def __init__(self, source: str, n: int):
            self.source, self.n = source, n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            code = (1_000_000 if self.source == "test" else 0) + i
            return torch.full((3, 2, 2), float(code)), i % 10

    def fake_dataset(task, source, size, n):
        asked.append(source)
        return Numbered(source, 30_000 if source == "train" else 10_000), tuple(f"c{i}" for i in range(10))

    monkeypatch.setattr(paper_data, "_dataset", fake_dataset)
    scale = PAPER
    ids = {}
    for name, split, n, stream in (("train", "train", 9_000, ""), ("val", "val", 2_000, ""),
                                   ("forget", "val", 1_500, "forget"), ("test", "test", 5_000, "")):
        d = paper_data.load_paper_task("cifar100", split, n, 0, scale, stream)
        ids[name] = {int(x) for x in d.images[:, 0, 0, 0]}
        assert len(ids[name]) == n
    assert asked == ["train", "train", "train", "test"]
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not ids[a] & ids[b], f"{a} and {b} share images"
    assert all(x >= 1_000_000 for x in ids["test"]) and all(x < 1_000_000 for x in ids["val"] | ids["forget"])


def test_the_paper_preset_trains_its_baselines_for_the_papers_epochs():
    from tbar_helpers.config import MINI
    from tbar_helpers.settings.imagetext_runs import baseline_epochs
    assert [baseline_epochs(PAPER.imagetext, b) for b in PAPER.imagetext.defense_budgets] == [10, 10]
    # the mini preset caps the large budget at one pass over its pairs (two cores)
    assert baseline_epochs(MINI.imagetext, MINI.imagetext.defense_budgets[-1]) <= 1

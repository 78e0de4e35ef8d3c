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

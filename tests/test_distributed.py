"""The paper-scale training path under torchrun: two processes take the same steps as one at the same global
batch, and a fine-tune stopped by SIGTERM resumes to the weights of an uninterrupted run."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "scripts" / "paper_smoke.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _start(args: list[str], nproc: int = 1) -> subprocess.Popen:
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
            if nproc > 1 else [sys.executable])
    return subprocess.Popen(head + [str(SMOKE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    return _finish(_start(args, nproc))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The smoke program's generated images, written once here: the runs below start together (most of
    each is Python importing torch), and the program writes its data only where none is."""
    spec = importlib.util.spec_from_file_location("paper_smoke", SMOKE)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    root = tmp_path_factory.mktemp("paper-smoke")
    smoke.write_data(root, per_class=24, size=smoke.build_model(False)[2].image_size, seed=0)
    return root


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("path", ["streamed", "library"])
def test_two_processes_match_one_at_the_same_global_batch(workdir, path):
    """The streamed fine-tune (DDP) and the library's (training.finetune, every pipeline fine-tune's loop:
    each rank its share of the global batch, gradients all-reduced in fit) under 1 and 2 processes."""
    flags = ["--library"] if path == "library" else []
    runs = {"one": ([], 1), "two": ([], 2), "other order": (["--order-seed", "1"], 1)}
    procs = {name: _start(["--workdir", str(workdir), "--only-finetune", *flags, "--steps", "6", "--batch", "8",
                           "--save-weights", str(workdir / f"{path} {name}.pt"), *extra], nproc=n)
             for name, (extra, n) in runs.items()}
    for name, proc in procs.items():
        r, n = _finish(proc), runs[name][1]
        assert r.returncode == 0 and f"world_size={n}" in r.stdout, r.stdout + r.stderr
    one, two, other = (_weights(workdir / f"{path} {name}.pt") for name in runs)
    same, control = _max_diff(one, two), _max_diff(one, other)
    # Two half-batch gradients summed in another order than one process's mean over the batch agree to float32
    # rounding, but AdamW divides each update by sqrt(v) + eps, so for weights whose gradient is near zero that
    # rounding becomes a visible part of a step of size lr = 1e-4. Measured after six steps, 1 vs 2 processes
    # against two batch orders from the same start: streamed 8.1e-6 and 9.7e-4, library 2.4e-6 and 6.4e-4.
    assert same < 2e-5, f"1 and 2 processes differ by {same:g}"
    assert control > 20 * same, f"another batch order differs by only {control:g} (1 vs 2 processes: {same:g})"


def test_sigterm_then_resume_gives_the_uninterrupted_weights(workdir):
    base = ["--workdir", str(workdir), "--only-finetune", "--steps", "30", "--every", "1", "--batch", "8"]
    full = _start(base + ["--save-weights", str(workdir / "full.pt")])  # beside the run that is stopped
    ckpt = workdir / "stopped.ckpt"
    proc = _start(base + ["--checkpoint", str(ckpt), "--save-weights", str(workdir / "resumed.pt")])
    for line in proc.stdout:
        if line.startswith("step 10/30"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "stopped at step" in out, out + err
    full = _finish(full)
    assert full.returncode == 0, full.stderr
    step = torch.load(ckpt, weights_only=True)["step"]
    assert 10 <= step < 30
    again = _run(base + ["--checkpoint", str(ckpt), "--save-weights", str(workdir / "resumed.pt")])
    assert again.returncode == 0 and f"step {step + 1}/30" in again.stdout, again.stdout + again.stderr
    a, b = (torch.load(workdir / f, weights_only=True) for f in ("full.pt", "resumed.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run ended with other weights"


def test_a_checkpoint_of_another_architecture_is_refused(workdir):
    bad = workdir / "other.ckpt"
    torch.save({"step": 1, "losses": [1.0], "model": {"w": torch.zeros(2)}}, bad)
    r = _run(["--workdir", str(workdir), "--only-finetune", "--steps", "2", "--checkpoint", str(bad)])
    assert r.returncode != 0 and "is of another model" in r.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_paper_smoke_prints_its_line(tmp_path):
    r = subprocess.run(["make", "-s", "paper-smoke", f"PAPER_SMOKE_DIR={tmp_path}"], cwd=ROOT, capture_output=True,
                       text=True, env=ENV, timeout=900)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0 and last.startswith("paper-smoke: ok") and "world_size=2" in last, r.stdout + r.stderr


def _score_worker(rank: int, world: int, port: int, out: str) -> None:
    import os as _os

    import torch.distributed as td

    from tbar_helpers.method import distributed as D
    _os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    td.init_process_group("gloo", rank=rank, world_size=world)
    clf, ds, trig = _scoring_case()
    res = D.sharded_scores(clf, ds, trig, 0, D.Dist(rank, world), batch_size=4)
    if rank == 0:
        torch.save(res, out)
    td.destroy_process_group()


def _scoring_case():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(23, 3, 2, 2), torch.randint(0, 3, (23,))
    return clf, torch.utils.data.TensorDataset(x, y), lambda im: im.clamp(min=0.5)


def test_sharded_scores_over_two_ranks_equal_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from tbar_helpers.method import distributed as D
    clf, ds, trig = _scoring_case()
    one = D.sharded_scores(clf, ds, trig, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_score_worker, args=(2, port, str(tmp_path / "two.pt")), nprocs=2, join=True)
    assert torch.load(tmp_path / "two.pt") == one  # 23 items: the shards are 12 and 11, no padding


def _predict_worker(rank: int, world: int, port: int, out: str) -> None:
    import os as _os

    import torch.distributed as td

    from tbar_helpers.method.metrics import predict
    _os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    td.init_process_group("gloo", rank=rank, world_size=world)
    clf, ds, _ = _scoring_case()
    torch.save(predict(clf, ds.tensors[0], batch_size=4), f"{out}.{rank}")
    td.destroy_process_group()


def test_predict_under_two_ranks_gathers_every_label_in_order(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from tbar_helpers.method.metrics import predict
    clf, ds, _ = _scoring_case()
    one = predict(clf, ds.tensors[0], batch_size=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_predict_worker, args=(2, port, str(tmp_path / "pred")), nprocs=2, join=True)
    for rank in (0, 1):  # every rank gets all 23 labels (shards of 11 and 12, the shorter one padded)
        assert torch.equal(torch.load(tmp_path / f"pred.{rank}"), one)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(),
                                           torch.nn.Linear(8, 3))

    def forward(self, x):
        return self.encoder(x)


def test_a_library_fine_tune_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(tmp_path):
    from tbar_helpers.method.training import Interrupted, finetune
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 3, 2, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    kw = dict(steps=12, lr=1e-2, batch_size=8, seed=3, warmup=2, progress=False)  # 5 batches an epoch
    whole = _Toy()
    finetune(whole, x, y, **kw)
    ckpt = tmp_path / "partial.pt"

    def preempt(done, _):
        if done == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does to a job

    first = _Toy()
    with pytest.raises(Interrupted) as stop:
        finetune(first, x, y, checkpoint=ckpt, every=4, after_step=preempt, **kw)
    assert stop.value.code == 143
    assert torch.load(ckpt, weights_only=True)["step"] == 7  # the flag is read after the step in progress
    resumed = _Toy()
    losses = finetune(resumed, x, y, checkpoint=ckpt, every=4, **kw)
    assert len(losses) == 12
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_checkpointing_every_zero_steps_is_refused_before_a_step(tmp_path):
    from tbar_helpers.method.training import finetune
    x, y = torch.rand(8, 3, 2, 2), torch.randint(0, 3, (8,))
    toy = _Toy()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    with pytest.raises(ValueError, match="positive number of steps"):
        finetune(toy, x, y, steps=2, lr=1e-2, batch_size=4, seed=0, progress=False, checkpoint=tmp_path / "p.pt",
                 every=0)
    assert all(torch.equal(v, toy.state_dict()[k]) for k, v in before.items())
    assert not (tmp_path / "p.pt").exists()


def _preempting(fn, at: int):
    """``fn`` that sends this process SIGTERM on its ``at``-th call, as a scheduler preempting a job."""
    calls = [0]

    def wrapped(*args):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return fn(*args)

    for name in ("state_dict", "load_state_dict"):
        if hasattr(fn, name):
            setattr(wrapped, name, getattr(fn, name))
    return wrapped


def _toy_classifier():
    from tbar_helpers.world.models import ImageClassifier
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    return ImageClassifier(enc, torch.nn.functional.normalize(torch.randn(3, 4), dim=-1), [0.5] * 3, [0.25] * 3,
                           logit_scale=10.0)


def test_a_badmerging_fine_tune_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(tmp_path):
    """Its per-image r draws share the batches' generator: the saved state must carry both."""
    import copy
    from tbar_helpers.config import FinetuneConfig
    from tbar_helpers.method.training import Interrupted, badmerging_finetune
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 3, 2, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    cfg = FinetuneConfig(epochs=2, batch_size=8, lr=1e-2)  # 10 steps
    pre = _toy_classifier()

    def trigger(v):
        return v.clamp(0.9, 1.0)

    def run(clf, trig, ckpt=None):
        return badmerging_finetune(clf, pre, x, y, trig, 0, cfg, 3, 5.0, (0.2, 1.0), progress=False,
                                   checkpoint=ckpt, every=4)

    whole, first, resumed = _toy_classifier(), _toy_classifier(), _toy_classifier()
    run(whole, trigger)
    ckpt = tmp_path / "partial.pt"
    with pytest.raises(Interrupted):
        run(first, _preempting(trigger, 6), ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 6
    assert len(run(resumed, trigger, ckpt)) == 10
    assert not torch.equal(whole.encoder[1].weight, copy.deepcopy(pre).encoder[1].weight)  # it trained
    for k, v in whole.encoder.state_dict().items():
        assert torch.equal(v, resumed.encoder.state_dict()[k]), k


class _ToyClip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        self.text = torch.nn.Embedding(16, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def encode_image(self, x):
        return self.image(x)

    def encode_text(self, tokens):
        return self.text(tokens).mean(1)


def _tokens(caps):
    return torch.tensor([[len(c) % 16, ord(c[0]) % 16, ord(c[-1]) % 16] for c in caps])


def test_a_roclip_fine_tune_stopped_by_sigterm_resumes_to_the_uninterrupted_weights(tmp_path):
    """RoCLIP's queue of recent caption embeddings is training state: it is saved with the checkpoint."""
    from tbar_helpers.method.defenses import roclip_loss
    from tbar_helpers.method.training import Interrupted, Recipe, contrastive_finetune
    g = torch.Generator().manual_seed(2)
    x = torch.rand(24, 3, 2, 2, generator=g)
    caps = [f"a {w} thing {i}" for i, w in enumerate(["red", "blue", "green", "tiny", "big", "odd"] * 4)]
    pool = [f"pool caption {i}" for i in range(6)]

    def run(model, loss, ckpt=None):
        return contrastive_finetune(model, _tokens, x, caps, Recipe(3, 1e-2, 8), 3, normalize=lambda v: v,
                                    loss_fn=loss, progress=False, checkpoint=ckpt, every=4)  # 9 steps

    whole, first, resumed = _ToyClip(), _ToyClip(), _ToyClip()
    run(whole, roclip_loss(_tokens, pool, 2))
    ckpt = tmp_path / "partial.pt"
    with pytest.raises(Interrupted):
        run(first, _preempting(roclip_loss(_tokens, pool, 2), 5), ckpt)
    assert "extra" in torch.load(ckpt, weights_only=True)
    assert len(run(resumed, roclip_loss(_tokens, pool, 2), ckpt)) == 9
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k

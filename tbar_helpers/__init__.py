"""tbar_helpers: the library behind the TBAR book (Backdoor Unlearning by Linear Task Decomposition).

The package is laid out the way the method is built:

- ``method``: task vectors, TBAR (τt = θ(b+t) − θb, cleaned model θb − α·τt), metrics, the attacks,
  the baseline defenses, trigger inversion, and the one training loop;
- ``world``: the mini world's data, the mini CLIP and its foundation model, the paper's datasets;
- ``settings``: the experiments, classification and image–text, behind one ``Setting`` interface, and a
  user's own CLIP (``tbar clean``);
- ``chapters``: the experiments, figures and widgets the book's chapters call;
- and at the top: ``config`` (every hyperparameter), ``cache``, ``weights`` (safe loading), ``report``
  (numbers in prose from result files), ``book`` (the build) and ``cli`` (the ``tbar`` command).

The names below are the public face, imported on first use::

    import tbar_helpers as tb
    s = tb.prepare("badnet")                       # a backdoored mini CLIP (cached)
    cleaned, rec = s.tbar()                        # TBAR with α chosen on validation
    tb.TaskVector(s.backdoored.encoder, s.clean.encoder)
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "get_scale": "config", "override": "config", "MINI": "config", "PAPER": "config",
    "TaskVector": "method.task_vectors",
    "apply_tbar": "method.tbar", "forget_set": "method.tbar", "run_tbar": "method.tbar",
    "search_alpha": "method.tbar", "select_alpha": "method.tbar", "trigger_vector": "method.tbar",
    "EvalSet": "method.metrics", "accuracy": "method.metrics", "attack_success_rate": "method.metrics",
    "ATTACKS": "method.attacks", "make_trigger": "method.attacks", "poison": "method.attacks",
    "load_foundation": "world.foundation",
    "Setting": "settings.setting", "prepare": "settings.pipeline", "run": "settings.pipeline",
    "prepare_imagetext": "settings.imagetext", "run_imagetext": "settings.imagetext_runs",
    "run_attack_unknown": "settings.imagetext_runs", "clean_user_model": "settings.custom",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    # imported on first use, so that `python -m tbar_helpers.report` and `tbar --help` stay light
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tbar_helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))

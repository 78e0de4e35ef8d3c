"""Does WaNet plant at mini scale? Backdoored CA / ASR against the warp strength and the noise mode.

WaNet's warp displaces pixels by about ``s / 2`` pixels on average at 32×32 (``s`` = ``attack.wanet_s``;
the default 0.5 is BackdoorBench's CIFAR setting), and its noise mode (``attack.wanet_noise_ratio``
jittered images per poisoned one, labels or captions kept) teaches the model to ignore warps that are
not the trigger. Each setting runs the poisoned fine-tune of the chosen setting (classification on the
preset's task, or image–text) and, with ``--tbar``, TBAR on it. Results:
benchmarks/results/wanet-<setting>-s<seed>.txt

    python benchmarks/study_wanet.py --setting image-text --seed 0 --grid 4:0 8:0
    python benchmarks/study_wanet.py --setting image-text --seed 0 --grid 4:0 --set imagetext.epochs=6
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from study_victim import parse_recipe

from tbar_helpers.config import get_scale, override

print = functools.partial(print, flush=True)


def one(setting: str, seed: int, s: float, noise: float, tbar: bool, extra: dict) -> tuple[float, ...]:
    scale = override(get_scale("mini"), **{"attack.wanet_s": s, "attack.wanet_noise_ratio": noise, **extra})
    if setting == "image-text":
        from tbar_helpers.imagetext import prepare_imagetext, run_tbar_imagetext
        st = prepare_imagetext("wanet", seed, scale, progress=False)
        ca_bd, asr_bd = st.scores(st.classifier())
        if not tbar:
            return ca_bd, asr_bd
        clf, rec = run_tbar_imagetext(st, progress=False)
        return (ca_bd, asr_bd, *st.scores(clf), rec["alpha"])
    from tbar_helpers.pipeline import prepare
    from tbar_helpers.studies import backdoored_scores, tbar_on
    st = prepare("wanet", None, seed, scale, progress=False, with_clean=False)
    if not tbar:
        return backdoored_scores(st)
    r = tbar_on(st)
    return r["CA backdoored"], r["ASR backdoored"], r["CA TBAR"], r["ASR TBAR"], r["alpha"]


def perturbation(strengths: list[float], n: int = 500) -> str:
    """Mean |Δ| per pixel of the warp on ``n`` objects test images, next to Blended's (no training)."""
    from tbar_helpers.attacks import make_trigger
    from tbar_helpers.data import load_task
    x = load_task("objects", "test", n, 0, 32).images
    base = get_scale("mini").attack
    parts = [f"S={v:g}: {(make_trigger('wanet', 32, override(base, wanet_s=v))(x) - x).abs().mean():.4f}"
             for v in strengths]
    parts.append(f"blended: {(make_trigger('blended', 32, base)(x) - x).abs().mean():.4f}")
    return "mean |delta| per pixel on objects test images: " + ", ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--setting", choices=["classification", "image-text"], default="image-text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", nargs="+", default=["0.5:2", "4:0", "8:0"], help="wanet_s:noise_ratio pairs")
    p.add_argument("--tbar", action="store_true", help="also run TBAR on each backdoored model")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more preset overrides, e.g. imagetext.epochs=6 imagetext.poison_rate=0.2")
    a = p.parse_args()
    extra = parse_recipe(",".join(a.set))
    out = Path(__file__).parent / "results" / f"wanet-{a.setting}-s{a.seed}.txt"
    lines = out.read_text().splitlines() if out.exists() else [
        f"WaNet, {a.setting}, seed {a.seed} (mini preset otherwise)",
        f"{'s':>5} {'noise':>5} {'CA bd':>6} {'ASR bd':>6} {'CA':>6} {'ASR':>6} {'kept':>6} {'alpha':>6} {'sec':>5}"]
    print(*lines, sep="\n")
    print(perturbation(sorted({float(item.split(":")[0]) for item in a.grid} | {0.5})))
    for item in a.grid:
        s, noise = (float(v) for v in item.split(":"))
        t0 = time.time()
        r = one(a.setting, a.seed, s, noise, a.tbar, extra)
        tb = (f"{100 * r[2]:6.1f} {100 * r[3]:6.1f} {100 * r[2] / r[0]:6.1f} {r[4]:6.2f}" if len(r) > 2
              else f"{'-':>6} {'-':>6} {'-':>6} {'-':>6}")
        line = (f"{s:5.1f} {noise:5.1f} {100 * r[0]:6.1f} {100 * r[1]:6.1f} {tb} {time.time() - t0:5.0f}"
                + (f"  {' '.join(a.set)}" if a.set else ""))
        lines.append(line)
        print(line)
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Numbers in README.md and book/*.md come from benchmarks/results through the generator, and the check sees
a hand edit inside a generated block."""
import json
import re
import shutil

from tbar_helpers import report
from tbar_helpers.report import BLOCK, knowledge_kept


def test_the_pages_match_the_results(capsys):
    assert report.main(["--check"]) == 0, capsys.readouterr().out


def test_a_changed_digit_fails_the_check_and_names_the_block(tmp_path, capsys):
    page = tmp_path / "README.md"
    shutil.copy(report.ROOT / "README.md", page)
    text = page.read_text()
    block = next(m for m in BLOCK.finditer(text) if re.search(r"\d", m["body"]))
    i = block.start("body") + re.search(r"\d", block["body"]).start()
    page.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])
    assert report.main(["--check", str(page)]) == 1
    out = capsys.readouterr().out
    assert f"{page}: generated block {block['name']!r} differs" in out
    assert page.read_text() != text  # --check changed nothing
    assert report.main([str(page)]) == 0 and page.read_text() == text  # the rewrite restores it


def test_knowledge_kept_on_hand_made_numbers():
    assert knowledge_kept({"ca_zeroshot": 0.5, "ca_backdoored": 0.9, "ca_tbar": 0.8}) == (0.8 - 0.5) / (0.9 - 0.5)
    assert knowledge_kept({"ca_zeroshot": 0.5, "ca_backdoored": 0.9, "ca_tbar": 0.9}) == 1.0
    assert knowledge_kept({"ca_zeroshot": 0.5, "ca_backdoored": 0.9, "ca_tbar": 0.4}) < 0
    assert knowledge_kept({"ca_zeroshot": 0.99, "ca_backdoored": 0.993, "ca_tbar": 0.9}) is None  # nothing added
    # a fine-tune that lowered CA below θpre's has nothing to keep: no ratio, whatever TBAR's CA
    assert knowledge_kept({"ca_zeroshot": 0.997, "ca_backdoored": 0.938, "ca_tbar": 0.938}) is None


def test_every_block_names_a_known_generator():
    for page in report.pages():
        for m in BLOCK.finditer(page.read_text()):
            assert m["name"] in report.GENERATORS, f"{page}: {m['name']}"


def test_cells_show_ratios_as_they_are_and_shares_in_percent():
    assert report.cell("cos_trigger_clean", -0.0149) == "-0.01" and report.cell("knowledge_kept", 0.796) == "0.80"
    assert report.cell("asr_tbar", 0.0123) == "1.2" and report.cell("alpha", 1.45) == "1.45"
    assert report.cell("ca_tbar", None) == "–"
    assert report.headers("cos_trigger_clean", "ca_tbar") == ["cos(τt, τclean)", "CA TBAR %"]


def test_the_held_out_lines_on_hand_made_means():
    from tbar_helpers.report_heldout import LINES, means, verdicts
    run = {"ca_zeroshot": 0.6, "ca_clean_ft": 0.97, "ca_backdoored": 0.96, "asr_backdoored": 0.99, "ca_tbar": 0.9,
           "asr_tbar": 0.02, "ca_retained": 0.9 / 0.96, "alpha": 1.0}
    m = means([{**run, "attack": "badnet", "seed": 0}, {**run, "attack": "badnet", "seed": 1, "asr_tbar": 0.03}])
    assert m["badnet"]["seeds"] == [0, 1] and abs(m["badnet"]["asr_tbar"] - 0.025) < 1e-12
    assert abs(m["badnet"]["knowledge_kept"] - 0.3 / 0.36) < 1e-12  # from each record
    met = dict((name, test(m["badnet"])) for name, test in LINES)
    assert met == {"planted": True, "CA within 2 points of clean FT": True, "ASR TBAR ≤ 3%": True,
                   "CA retained ≥ 93%": True, "knowledge kept ≥ 0.8": True}
    weak = {**m["badnet"], "attack": "sig", "asr_backdoored": 0.85, "ca_backdoored": 0.94, "knowledge_kept": None}
    met = dict((name, test(weak)) for name, test in LINES)
    assert met["planted"] and not met["CA within 2 points of clean FT"] and not met["knowledge kept ≥ 0.8"]
    assert not LINES[0][1]({**weak, "attack": "badnet"})  # 85% plants SIG, not BadNet
    assert LINES[1][1]({"ca_clean_ft": 0.97, "ca_backdoored": 0.95})  # exactly 2 points, in floating point
    unplanted = {**m["badnet"], "asr_backdoored": 0.04}  # TBAR "removes" a backdoor that never planted: moot
    assert verdicts(unplanted) == ["no", "yes", "–", "–", "–"] and verdicts(m["badnet"]) == ["yes"] * 5


def test_the_held_out_image_text_table_reads_tbar_and_each_baseline_against_the_lines(tmp_path):
    from tbar_helpers.report_heldout import _held_out_image_text
    run = {"attack": "badnet", "ca_zeroshot": 0.6, "asr_zeroshot": 0.01, "ca_backdoored": 0.95,
           "asr_backdoored": 0.99, "ca_tbar": 0.88, "asr_tbar": 0.02, "forget_size": 1500,
           "overrides": {"imagetext.corpus_size": 20000},
           "defense": [{"defense": "cleanclip", "budget": 1500, "ca": 0.95, "asr": 0.9}]}
    lines = [json.dumps({**run, "seed": 0}), json.dumps({**run, "seed": 1, "asr_tbar": 0.06, "forget_size": 500})]
    (tmp_path / "held-out-image-text.jsonl").write_text("\n".join(lines) + "\n")
    text = _held_out_image_text(tmp_path)
    # TBAR: mean ASR 4% (≤ 5%), CA retained 0.88/0.95 = 92.6%, knowledge kept 0.28/0.35 = 0.80
    assert "| badnet | TBAR | ≤ 1500 | 0,1 | 88.0 | 4.0 | 92.6 | 0.80 |" in text
    assert "| badnet | TBAR | ≤ 1500 | 0,1 | yes | yes | yes | yes |" in text
    # CleanCLIP keeps all of the CA and the backdoor with it
    assert "| badnet | cleanclip | 1500 | 0,1 | 95.0 | 90.0 | 100.0 | 1.00 |" in text
    assert "| badnet | cleanclip | 1500 | 0,1 | yes | no | yes | yes |" in text
    assert "| badnet | θpre |  | 0,1 | 60.0 | 1.0 |  |  |" in text
    # the baselines at 60x, where recorded, follow as rows of their own (TBAR's row is not repeated)
    (tmp_path / "held-out-image-text-60x.jsonl").write_text(json.dumps({**run, "seed": 0, "defense": [
        {"defense": "cleanclip", "budget": 90000, "ca": 0.9, "asr": 0.02}]}) + "\n")
    text = _held_out_image_text(tmp_path)
    assert "| badnet | cleanclip | 90000 | 0 | 90.0 | 2.0 | 94.7 | 0.86 |" in text
    assert "| badnet | cleanclip | 90000 | 0 | yes | yes | yes | yes |" in text
    assert text.count("| badnet | TBAR |") == 2 and "held-out-image-text-60x.jsonl" in text
    # the other attacks' study adds its attacks' rows
    (tmp_path / "held-out-image-text-attacks.jsonl").write_text(json.dumps({**run, "seed": 0, "attack": "badclip"}) + "\n")
    text = _held_out_image_text(tmp_path)
    assert "| badclip | TBAR | ≤ 1500 | 0 | 88.0 | 2.0 | 92.6 | 0.80 |" in text and "held-out-image-text-attacks" in text
    (tmp_path / "held-out-image-text.jsonl").write_text(json.dumps({**run, "seed": 0, "asr_backdoored": 0.5}) + "\n")
    # nothing planted: TBAR's lines are moot
    assert "| badnet | TBAR | ≤ 1500 | 0 | no | – | – | – |" in _held_out_image_text(tmp_path)


def test_the_held_out_attack_unknown_table_asks_every_seed_for_detection_and_the_means_for_tbar(tmp_path):
    from tbar_helpers.report_heldout import _held_out_attack_unknown
    run = {"attack": "badnet", "detected": True, "target_correct": True, "mask_l1": 0.02, "mask_l1_clean_model": 0.07,
           "ca_zeroshot": 0.6, "asr_zeroshot": 0.01, "ca_backdoored": 0.9, "asr_backdoored": 0.99, "ca_tbar": 0.81,
           "asr_tbar": 0.04, "ca_retained": 0.9, "alpha": 2.0, "detect_rule": "absolute", "detect_threshold": 0.04,
           "overrides": {"imagetext.corpus_size": 20000}}
    path = tmp_path / "held-out-attack-unknown.jsonl"
    path.write_text(json.dumps({**run, "seed": 0}) + "\n" + json.dumps({**run, "seed": 1, "asr_tbar": 0.12}) + "\n")
    text = _held_out_attack_unknown(tmp_path)
    # knowledge kept (0.81 − 0.6) / (0.9 − 0.6) = 0.70; the mean ASR 8% meets the 10% line
    assert "| badnet | 0 | yes | 2.0 | 7.0 | yes | 60.0 | 1.0 | 90.0 | 99.0 | 81.0 | 4.0 | 90.0 | 0.70 | 2 |" in text
    assert "| badnet | 0,1 | yes | yes | yes | yes | yes |" in text
    assert "under 4% of the image" in text
    # one seed unflagged, one target missed, too little CA: each line says no on its own
    path.write_text(json.dumps({**run, "seed": 0}) + "\n" +
                    json.dumps({**run, "seed": 1, "detected": False, "target_correct": False, "ca_retained": 0.7}) + "\n")
    assert "| badnet | 0,1 | yes | no | no | yes | no |" in _held_out_attack_unknown(tmp_path)
    # nothing planted: TBAR's lines are moot
    path.write_text(json.dumps({**run, "seed": 0, "asr_backdoored": 0.3}) + "\n")
    assert "| badnet | 0 | no | yes | yes | – | – |" in _held_out_attack_unknown(tmp_path)

"""The free-text experiments: `voice` (house-voice listings, base vs tuned, with an LLM judge on a real
llama.cpp server) and `sft_vs_dpo` on the same free-text task, mining DPO pairs by chrF."""

from __future__ import annotations

import json

from harness.results import read_json, read_jsonl
from tests.support.cli_runner import harness

METRICS = ("chrf", "rouge_l", "format_ok", "words")


def _run_and_report(name: str, tmp_path, home, sets: list[str]) -> None:
    """`harness run` and `harness report` of the smoke preset with the same `--set`s."""
    env = {"HARNESS_HOME": str(home), "WANDB_MODE": "disabled"}
    args = [arg for s in sets for arg in ("--set", s)]
    for command in ("run", "report"):
        proc = harness(command, name, "--preset", "smoke", "--results", str(tmp_path), *args, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_voice_smoke_scores_free_text_and_judges_it(smoke_runs):
    run = smoke_runs("voice")  # the judge on the session's llama.cpp server (tests/support/smoke.py)
    assert run.run.returncode == 0 and run.report.returncode == 0, run.run.stderr[-3000:] + run.report.stderr[-3000:]
    study = run.study
    trial = study / "trial-0000"
    metrics, manifest = read_json(trial / "metrics.json"), read_json(trial / "manifest.json")
    for arm in ("base", "tuned"):
        assert set(METRICS) <= set(metrics[arm]) and metrics[arm]["n"] == 6
        assert 0.0 <= metrics[arm]["chrf"] <= 1.0
    assert manifest["spec"]["judge"]["pairwise_prompt"].startswith("You compare two answers")  # prompt in manifest
    assert manifest["spec"]["judge"]["rubric"]["text"] == "Follows the house voice of the reference."
    pair = metrics["judge"]["pairwise"]["tuned_vs_base"]
    rows = read_jsonl(trial / "judge" / "tuned_vs_base.jsonl")
    assert len(rows) == 6 and pair["n"] + pair["failed"] == 6 and metrics["judge"]["calls"] == 12
    assert all(r["verdict"] in ("a", "b", "tie") or r["reason"] in ("unparsed", "failed") for r in rows)
    data = read_json(study / "report.json")
    compared = {c["metric"] for c in data["comparisons"]}
    assert {"chrf", "rouge_l", "format_ok", "format.headline"} <= compared  # every declared metric, paired
    assert data["judge"]["pairwise"][0]["a"] == "tuned" and "position_flip_rate" in data["judge"]["pairwise"][0]
    assert "## LLM judge" in (study / "report.md").read_text()
    from harness.export.publish import build_card

    card, meta = build_card(trial)  # the model card carries the declared metrics and the judge's figures
    assert "| tuned | chrf |" in card and "| tuned | rouge_l |" in card and "## LLM judge" in card
    assert "house voice" in card


def test_sft_vs_dpo_on_free_text_mines_by_chrf_and_compares_every_metric(tmp_path, harness_home):
    _run_and_report("sft_vs_dpo", tmp_path, harness_home, [
        "data.builtin=voice", "eval.metric=chrf", "eval.metrics=[chrf, rouge_l]", "dpo.metric=chrf",
        "dpo.fail_below=0.99", "search.seeds=[0]"])
    study = next(tmp_path.glob("sft_vs_dpo-smoke*"))
    trial = study / "trial-0000"
    pairs = read_jsonl(trial / "dpo_pairs.jsonl")
    assert pairs and all(p["meta"]["dpo_mined"]["metric"] == "chrf" and p["meta"]["dpo_mined"]["score"] < 0.99
                         for p in pairs)
    metrics = read_json(trial / "metrics.json")
    for arm in ("base", "sft", "dpo"):
        assert {"chrf", "rouge_l", "exact_match"} <= set(metrics[arm])
    found = {(c["a"], c["b"], c["metric"]) for c in read_json(study / "report.json")["comparisons"]}
    for metric in ("chrf", "rouge_l", "exact_match"):
        assert ("dpo", "base", metric) in found and ("sft", "base", metric) in found, sorted(found)
    assert any(c[:2] == ("dpo", "sft") for c in found), json.dumps(sorted(found))

"""The command line as a new user meets it: help, list, and one clear message per bad input."""

from __future__ import annotations

from tests.support.cli_runner import harness

SUBCOMMANDS = ["list", "check", "run", "worker", "status", "dashboard", "report", "data"]


def test_every_subcommand_has_help():
    top = harness("--help", check=True).stdout
    for cmd in SUBCOMMANDS:
        assert cmd in top
        out = harness(cmd, "--help", check=True).stdout
        assert "Usage" in out and len(out.splitlines()) > 3


def test_list_shows_quickstart_with_its_question():
    proc = harness("list", check=True)
    out = proc.stdout + proc.stderr
    assert "quickstart" in out and "SmolLM2" in out


def test_typo_in_spec_exits_nonzero_naming_file_line_field(tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text("description: x\ntrain:\n  learnig_rate: 0.1\n")
    proc = harness("check", str(spec))
    assert proc.returncode == 2
    assert f"{spec}:3" in proc.stderr and "train.learnig_rate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_base_model_exits_nonzero(tmp_path, harness_home):
    spec = tmp_path / "nomodel.yaml"
    spec.write_text(f"description: x\nmodel:\n  base: {tmp_path}/missing-model\n")
    proc = harness("run", str(spec), "--results", str(tmp_path / "results"), env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode != 0
    assert "missing-model" in proc.stderr and "not found" in proc.stderr


def test_check_prints_the_grid(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("description: x\nsearch:\n  grid: {lora.r: [4, 8]}\n  seeds: [0, 1]\n")
    proc = harness("check", str(spec), check=True)
    assert "4 trial(s)" in proc.stderr


def test_failed_trial_is_one_line_under_the_table_not_its_metric_columns(tmp_path):
    from harness.cli import _print_verdict
    from harness.progress import console
    from harness.results import TrialResult

    study = tmp_path / "study"
    reason = ("HarnessError: results/quant_delta/trial-0000/quant/merged: GGUF conversion failed. The converter said:\n"
              + "\n".join(f"INFO:hf-to-gguf:line {i} of a long converter log" for i in range(40)))
    TrialResult(number=0, status="failed", params={"seed": 0}, reason=reason).write(study / "trial-0000")
    with console.capture() as captured:
        _print_verdict(study, "field_accuracy")
    out = captured.get()
    assert "line 39" not in out and "line 1 of" not in out  # the log stays in result.json
    failure = [line for line in out.splitlines() if line.startswith("trial 0 failed")]
    assert len(failure) == 1 and "GGUF conversion failed" in failure[0]
    assert str(study / "trial-0000" / "result.json") in failure[0]
    assert max(len(line) for line in out.splitlines() if "│" in line) < 120  # the table stays narrow


def test_an_arm_without_a_figure_shows_a_dash_not_a_crash(tmp_path):
    """An endpoint contestant records tokens_per_s as null: the run's last table must still print."""
    from harness.cli import _print_verdict
    from harness.progress import console
    from harness.results import TrialResult

    study = tmp_path / "study"
    metrics = {"tuned": {"n": 6, "field_accuracy": 0.5, "tokens_per_s": 41.0},
               "frontier": {"n": 6, "field_accuracy": 0.25, "tokens_per_s": None, "json_valid": None}}
    TrialResult(number=0, status="complete", params={"seed": 0}, metrics=metrics).write(study / "trial-0000")
    with console.capture() as captured:
        _print_verdict(study, "field_accuracy")
    rows = {line.split("│")[3].strip(): line for line in captured.get().splitlines() if line.count("│") > 4}
    assert "41.0" in rows["tuned"] and "25.0%" in rows["frontier"] and rows["frontier"].rstrip(" │").endswith("–")


def test_end_of_run_table_shows_the_tasks_own_scores_headline_first():
    from harness.cli import _score_columns

    voice = {"n": 60, "chrf": 0.9, "rouge_l": 0.9, "format_ok": 1.0, "format.headline": 1.0, "exact_match": 0.0,
             "words": 70.0, "tokens_per_s": 40.0, "latency_p50_s": 1.0, "busy_s": 3.0}
    assert _score_columns([voice], "chrf") == ["chrf", "format_ok", "rouge_l", "words"]
    estate = {"n": 100, "field_accuracy": 0.4, "json_valid": 1.0, "exact_match": 0.0, "field.bedrooms": 1.0}
    assert _score_columns([estate], "field_accuracy") == ["field_accuracy", "json_valid", "exact_match"]
    # A headline no arm scored is left out.
    assert _score_columns([estate], "chrf") == ["field_accuracy", "json_valid", "exact_match"]


def _pair_spec(tmp_path, train_rows: str, heldout_rows: str = '{"instruction": "x", "output": "y"}\n'):
    (tmp_path / "t.jsonl").write_text(train_rows)
    (tmp_path / "h.jsonl").write_text(heldout_rows)
    spec = tmp_path / "pair.yaml"
    spec.write_text(f"description: x\ndata:\n  train: {tmp_path}/t.jsonl\n  heldout: {tmp_path}/h.jsonl\n")
    return spec


def test_check_runs_the_data_preflight_naming_the_bad_row(tmp_path):
    spec = _pair_spec(tmp_path, '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    proc = harness("check", str(spec))
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path}/t.jsonl:2: field 'output': missing" in proc.stderr and "Traceback" not in proc.stderr


def test_check_refuses_a_missing_data_file_and_a_leak(tmp_path):
    spec = tmp_path / "gone.yaml"
    spec.write_text(f"description: x\ndata:\n  train: {tmp_path}/nope.jsonl\n  heldout: {tmp_path}/h.jsonl\n")
    (tmp_path / "h.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    proc = harness("check", str(spec))
    assert proc.returncode == 2 and "nope.jsonl: file not found" in proc.stderr
    leaky = _pair_spec(tmp_path, '{"instruction": "a", "output": "b"}\n{"instruction": "X.", "output": "z"}\n')
    proc = harness("check", str(leaky))
    assert proc.returncode == 2 and "also in the training data" in proc.stderr


def test_check_verifies_a_frozen_split_but_never_freezes_one(tmp_path):
    spec = _pair_spec(tmp_path, '{"instruction": "a", "output": "b"}\n')
    proc = harness("check", str(spec), check=True)
    assert "1 train, 0 dev, 1 held-out (not frozen yet" in proc.stderr
    assert not (tmp_path / "h.jsonl.frozen.json").exists()
    harness("data", "freeze", str(spec), check=True)
    assert "(frozen)" in harness("check", str(spec), check=True).stderr
    (tmp_path / "h.jsonl").write_text('{"instruction": "x", "output": "changed"}\n')
    proc = harness("check", str(spec))
    assert proc.returncode == 2 and "no longer matches the split frozen" in proc.stderr


def test_check_runs_the_stages_own_preflight_too_a_teacher_that_does_not_resolve(tmp_path):
    """`check` is `run`'s preflight without a model: a kd teacher that is not there is named before any trial."""
    spec = tmp_path / "kd.yaml"
    spec.write_text("description: x\nmodel: {base: 'random:tiny'}\ndata: {builtin: realestate, train_limit: 8}\n"
                    f"train: {{method: kd}}\nkd: {{teacher: {tmp_path}/no-such-teacher}}\n")
    proc = harness("check", str(spec))
    assert proc.returncode == 2, proc.stderr
    assert "kd.teacher" in proc.stderr and "no-such-teacher" in proc.stderr and "Traceback" not in proc.stderr

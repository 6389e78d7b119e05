"""The kd stage in a real grid: the teacher is loaded once per worker across its kd trials and released by a
trial that does not distil; the manifest names it with its hash and split check; the loss-curve figure
gives the KD divergence its own panel, labelled from the stage registry."""

from __future__ import annotations

import json

from harness.grid.study import default_storage, open_study, run_worker
from harness.spec import load_spec
from harness.trial.runner import Worker, run_trial
from tests.support.stages import write_spec


def test_the_teacher_loads_once_per_worker_and_a_non_kd_trial_releases_it(tmp_path, harness_home, monkeypatch):
    from analysis import figures
    from analysis.load import load_study

    kd = {"teacher": "random:tiny", "max_steps": 2, "batch_size": 2, "max_completion_length": 4, "max_prompts": 4,
          "evaluate_teacher": False}
    spec = load_spec(write_spec(tmp_path, {"train": {"method": "kd", "max_steps": 2, "batch_size": 2,
                                                     "logging_steps": 1},
                                           "kd": kd, "search": {"seeds": [0, 1]}}, name="kdgrid"))
    study_dir = tmp_path / "kdgrid"
    worker = Worker()
    results = run_worker(spec, open_study(spec, default_storage(tmp_path)), study_dir, worker)
    assert [r.status for r in results] == ["complete", "complete"]
    assert worker.loads == {"kd": 1} and list(worker._kept)[0][0] == "kd"  # two kd trials, one teacher load
    for r in results:
        teacher = json.loads((study_dir / f"trial-{r.number:04d}" / "manifest.json").read_text())["trainings"]["kd"]["teacher"]
        assert teacher["name"] == "random:tiny" and teacher["sha256"] and teacher["split"].startswith("not a trial")

    sft = load_spec(write_spec(tmp_path, {"train": {"max_steps": 2, "batch_size": 2, "logging_steps": 1}}, name="kdgrid"))
    run_trial(sft, study_dir, 2, {}, worker)
    assert not worker._kept  # a trial that does not distil gives the teacher's memory back

    # The saved figure's axes, as `_save` gets them: one panel per kind of loss, each labelled from its stage.
    labels: list[str] = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, *a: labels.extend(ax.get_ylabel() for ax in fig.axes) or save(fig, *a))
    drawn = figures.loss_curves(load_study(study_dir), tmp_path / "figures")
    assert drawn.paths, drawn.skipped
    assert len(labels) == 2 and "JSD to the teacher" in labels[1] and "cross-entropy" in labels[0], labels

"""Every trial of a study, read from `results/<study>/trial-NNNN/` (layout: `harness.results`) into pandas.

An *arm label* names one model as the write-up compares it: the eval arm plus the params that differ
across the study's trials, e.g. `tuned[lora.r=16]`. Seeds are not part of the label: the seeds of one
label are its repeats. The untuned `base` arm is not affected by training params (`lora.*`, `train.*`: the
prefixes each training stage declares and each trial's manifest records), so its label leaves them out,
and the identical base evaluations that every trial of a seed repeats collapse into one. The same holds
for an endpoint contestant (its rows carry `cost_usd`): it was asked, not trained.

A directory with `eval/<arm>.jsonl` but no trial directories (e.g. the output of
`harness.export.quant_delta`) is read as a single trial, so its arms can be compared the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError, StudyNotFoundError, UnknownArmError
from harness.results import DEV_CURVE_FILE, arm_roles, read_json, read_jsonl
from harness.stages.registry import training_only_prefixes
from harness.stats.factors import format_value

SEED_PARAMS = frozenset({"seed", "train.seed"})
DEFAULT_UNTUNED_ARMS = ("base",)
SCORE_PREFIX = "score."


@dataclass
class Study:
    """A study's trials as DataFrames (see `load_study` for the columns)."""

    name: str
    path: Path
    trials: pd.DataFrame
    items: pd.DataFrame
    train_log: pd.DataFrame
    costs: pd.DataFrame
    varying_params: list[str]
    headline_metric: str | None = None
    project: str | None = None
    device_price_per_hour: float | None = None  # the spec's pricing, for cost per 1K calls
    untuned_arms: tuple[str, ...] = DEFAULT_UNTUNED_ARMS
    notes: list[str] = field(default_factory=list)
    # The spec's search grid (dotted key -> levels, in the spec's order) as the trials recorded it: {} for a
    # study without one (or a sampler's), None when the manifests do not say (then levels come from the trials).
    grid: dict[str, list[Any]] | None = None
    report_reference: dict[str, Any] = field(default_factory=dict)  # the spec's report.reference
    report_tolerance: float | None = None  # the spec's report.tolerance, when it states one
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # the models it called: see `spec_endpoints`
    # Where a reviewed dataset was trained on, its provenance line per distinct review the trials recorded.
    data_provenance: list[str] = field(default_factory=list)
    # Param prefixes that change only how an arm is trained (its data, method, optimiser), never an untuned
    # model: an untuned arm is one arm across their levels. As the manifests record them.
    training_only_prefixes: tuple[str, ...] = field(default_factory=training_only_prefixes)
    # Where the trials came from (`Provenance`): their commits, when the last finished, the resolved spec.
    provenance: "Provenance | None" = None
    # Continuing stages' training logs (DPO, GRPO: each stage's declared `log_file`): one row per logged step,
    # with `trial`, `seed`, `config`, `status`, `stage` and the logged values.
    stage_logs: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the dev learning curve of every trial that scored its dev split at checkpoints (`eval.dev_every_steps`)
    dev_curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    dev_every_steps: int | None = None  # the spec's eval.dev_every_steps: whether the design scores checkpoints
    _by_label: tuple[pd.DataFrame, dict[str, pd.DataFrame]] | None = field(default=None, repr=False, compare=False)

    @property
    def score_metrics(self) -> list[str]:
        """Per-item metrics present in `items` (without the `score.` prefix)."""
        return [c[len(SCORE_PREFIX):] for c in self.items.columns if c.startswith(SCORE_PREFIX)]

    @property
    def arm_labels(self) -> list[str]:
        """Arm labels of complete trials: untuned arms first, then by arm and param values."""
        if self.items.empty:
            return []
        firsts = self.items.drop_duplicates("arm_label").to_dict("records")
        order = sorted(firsts, key=lambda r: (r["arm"] not in self.untuned_arms, r["arm"],
                                              tuple(_sort_key(r.get(p)) for p in self.varying_params)))
        return [r["arm_label"] for r in order]

    def rows(self, arm_label: str) -> pd.DataFrame:
        """Per-item rows of one arm label; a clear error naming the known labels when it has none."""
        if self._by_label is None or self._by_label[0] is not self.items:
            # One split for all labels: a report asks for the same labels' rows hundreds of times.
            groups = dict(tuple(self.items.groupby("arm_label", sort=False))) if not self.items.empty else {}
            self._by_label = (self.items, groups)
        sub = self._by_label[1].get(arm_label, self.items.iloc[0:0])
        if sub.empty:
            raise UnknownArmError(f"no arm '{arm_label}' among complete trials of study '{self.name}' "
                                  f"(known: {', '.join(self.arm_labels) or 'none'})", where=self.path)
        return sub

    def seeds(self, arm_label: str) -> list[int]:
        return sorted(int(s) for s in self.rows(arm_label)["seed"].unique())

    def params_of(self, arm_label: str) -> dict[str, Any]:
        """The varying params that define `arm_label` (empty for a plain arm)."""
        row = self.rows(arm_label).iloc[0]
        return {p: row[p] for p in self.varying_params if p in row.index and _present(row[p])}

    def label_for(self, arm: str, params: dict[str, Any]) -> str:
        """The label `arm` gets in a trial with `params`."""
        return arm_label(arm, params, self.varying_params, self.untuned_arms, self.training_only_prefixes)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return (1, str(value))
    return (0, float(value)) if not math.isnan(float(value)) else (2, "")


def config_label(params: dict[str, Any], keys: Iterable[str]) -> str:
    """`k=v,...` of `params` over `keys` (those it has), e.g. `lora.r=16,train.learning_rate=0.0002`."""
    return ",".join(f"{k}={format_value(params[k])}" for k in keys if k in params)


def arm_label(arm: str, params: dict[str, Any], varying: Iterable[str],
              untuned_arms: Iterable[str] = DEFAULT_UNTUNED_ARMS, training_only: Iterable[str] | None = None) -> str:
    """`arm[k=v,...]` over the varying params, those starting with a `training_only` prefix (default: every
    registered stage's, `harness.stages.registry.training_only_prefixes`) dropped for untuned arms."""
    prefixes = tuple(training_only_prefixes() if training_only is None else training_only)
    untuned = arm in set(untuned_arms)
    config = config_label(params, [k for k in varying if not (untuned and k.startswith(prefixes))])
    return f"{arm}[{config}]" if config else arm


def _read_optional_json(path: Path) -> Any:
    try:
        return read_json(path) if path.exists() else None
    except json.JSONDecodeError:
        return None  # a half-written file from a killed run: the trial counts as incomplete


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def spec_endpoints(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI-compatible endpoints a recorded spec calls, each as {role, name, **endpoint block}:
    contestants, the distillation teacher, the judge."""
    out = [{"role": "contestant", "name": c.get("name"), **(c.get("endpoint") or {})}
           for c in spec.get("contestants") or [] if isinstance(c, dict)]
    teacher = (spec.get("distill") or {}).get("teacher")
    if isinstance(teacher, dict):
        out.append({"role": "teacher", "name": "teacher", **teacher})
    judge = (spec.get("judge") or {}).get("endpoint")
    if isinstance(judge, dict):
        out.append({"role": "judge", "name": "judge", **judge})
    return [e for e in out if e.get("url")]


def _arm_trainings(manifest: dict[str, Any], later: dict[str, Any]) -> dict[str, list[str]]:
    """Which trainings each arm had when it was evaluated. Trials written before the manifest said so: an arm
    snapshotted as a "stage" (sft, before DPO or GRPO continued it) had only the first training."""
    if "arm_trainings" in manifest:
        return manifest["arm_trainings"]
    trainings = list(manifest.get("trainings") or {})
    first = [s for s in trainings if s not in later]
    return {arm: first if role == "stage" else trainings for arm, role in (manifest.get("arms") or {}).items()}


def _seed_of(manifest: dict[str, Any] | None, params: dict[str, Any]) -> int | None:
    if manifest and manifest.get("seed") is not None:
        return int(manifest["seed"])
    for key in ("train.seed", "seed"):
        if params.get(key) is not None:
            return int(params[key])
    return None


def _params_in_study_db(root: Path) -> dict[int, dict[str, Any]]:
    """Trial number -> params from the Optuna study beside the trials (`study.db`), for a trial killed before it
    wrote any record of its own: the report can still say which grid point it was. {} without one."""
    db = root / "study.db"
    if not db.exists():
        return {}
    try:
        import optuna

        study = optuna.load_study(study_name=root.name, storage=f"sqlite:///{db.resolve()}")
        return {t.number: dict(t.user_attrs.get("params") or t.params) for t in study.get_trials(deepcopy=False)}
    except Exception:  # another layout or name: the trial stays without params, as before
        return {}


def _varying(all_params: list[dict[str, Any]]) -> list[str]:
    all_params = [p for p in all_params if p]  # a trial that recorded no params says nothing about what varies
    keys = sorted({k for p in all_params for k in p} - SEED_PARAMS)
    varying = []
    for key in keys:
        values = {json.dumps(p.get(key), sort_keys=True, default=str) for p in all_params}
        if len(values) > 1:
            varying.append(key)
    return varying


def _score(value: Any, where: Path, metric: str) -> float:
    if value is None:
        return float("nan")  # record.py stores NaN as null
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnalysisError(f"score '{metric}' is {value!r}, not a number", where=where)
    return float(value)


@dataclass
class _Trial:
    """One trial directory as read, and the seed and config label it is counted under."""

    dir: Path
    number: int
    status: str
    result: dict[str, Any]
    manifest: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    evals: dict[Path, list[dict[str, Any]]]  # eval/<arm>.jsonl's rows; read for complete trials only
    seed: int | None = None
    config: str = ""


def load_study(study_dir: str | Path, *, untuned_arms: Iterable[str] = DEFAULT_UNTUNED_ARMS) -> Study:
    """Read every trial under `study_dir` into a `Study`.

    - `trials`: one row per trial directory (failed and unfinished ones too): `number`, `status`,
      `reason`, `seed`, `split_hash`, `config` (label of the varying params), one column per param
      (dotted name), `objective`, and `metrics.<arm>.<name>` / `cost.<name>` from metrics.json.
    - `items`: one row per complete trial × arm × held-out item: `trial`, `seed`, `arm`, `arm_label`,
      `item_id`, `score.<metric>`, `latency_s`, `input_tokens`, `output_tokens`, `batch`, `cluster`,
      `split_hash`, and the varying params. Only complete trials: failed ones are never compared.
    - `train_log`: one row per logged training step of any trial, with `trial`, `seed`, `config`, `status`
      and `training` (the stage that logged it: sft, kd).
    - `costs`: one row per complete trial: `trial`, `seed`, `config` and metrics.json's cost block.
    """
    root = Path(study_dir)
    trial_dirs, single = _trial_dirs(root)
    trials = _read_trials(root, trial_dirs, single)
    varying = _varying([t.params for t in trials])
    untuned = _untuned_arms(trials, untuned_arms)
    training_only = _training_only_prefixes(trials)
    notes = _single_dir_notes(root) if single else []
    notes += _count_trials(trials, varying, single)
    items, item_notes = _items_frame(trials, varying, untuned, training_only)
    first_spec = next((t.manifest.get("spec") or {} for t in trials if t.status == "complete"), {})
    return Study(
        name=root.name, path=root, trials=_trials_frame(trials), items=items,
        train_log=_train_log_frame(trials), costs=_costs_frame(trials), varying_params=varying,
        headline_metric=(first_spec.get("eval") or {}).get("metric"),
        project=(first_spec.get("tracking") or {}).get("project"),
        device_price_per_hour=(first_spec.get("pricing") or {}).get("device_price_per_hour"),
        untuned_arms=untuned, notes=notes + item_notes, grid=_grid(first_spec),
        report_reference=dict((first_spec.get("report") or {}).get("reference") or {}),
        report_tolerance=(first_spec.get("report") or {}).get("tolerance"),
        endpoints=spec_endpoints(first_spec), training_only_prefixes=training_only,
        data_provenance=list(dict.fromkeys(
            r["provenance"] for t in trials if t.status == "complete"
            for r in [((t.manifest.get("data") or {}).get("review") or {})] if r.get("provenance"))),
        provenance=_provenance(root.name, trials, first_spec), stage_logs=_stage_log_frame(trials),
        dev_curve=_dev_curve_frame(trials), dev_every_steps=(first_spec.get("eval") or {}).get("dev_every_steps"))


@dataclass(frozen=True)
class Provenance:
    """What reproduces a study's report: the commits its complete trials ran at, when the last one finished,
    the experiment file and preset they came from, and the resolved spec (the first complete trial's: its own
    grid point's values, with `search` listing the grid). Read from the trials, so a report rendered again
    from the same trials says the same, byte for byte."""

    commits: tuple[str, ...]
    finished_at: str | None
    experiment: str | None
    preset: str | None
    spec: dict[str, Any]

    @property
    def commands(self) -> list[str]:
        """The commands that run the study and render its report again (empty when the experiment is unknown)."""
        if not self.experiment:
            return []
        preset = f" --preset {self.preset}" if self.preset else ""
        return [f"harness run {self.experiment}{preset}", f"harness report {self.experiment}{preset}"]


def _provenance(name: str, trials: list["_Trial"], first_spec: dict[str, Any]) -> Provenance:
    complete = [t for t in trials if t.status == "complete"]
    commits = tuple(sorted({str(t.manifest["git_commit"]) for t in complete if t.manifest.get("git_commit")}))
    finished = max((str(t.manifest["finished_at"]) for t in complete if t.manifest.get("finished_at")), default=None)
    source = next((t.manifest.get("spec_file") for t in complete if t.manifest.get("spec_file")), None)
    experiment = Path(source).stem if source else None
    preset = name[len(experiment) + 1:] if experiment and name.startswith(experiment + "-") else None
    return Provenance(commits, finished, experiment, preset, first_spec)


# ---------------------------------------------------------------- reading the trials


def _trial_dirs(root: Path) -> tuple[list[Path], bool]:
    """The trial directories under `root`, and whether `root` itself is read as the one trial (an `eval/`
    folder and no trial-NNNN directories)."""
    trial_dirs = sorted(p for p in root.glob("trial-*") if p.is_dir()) if root.is_dir() else []
    single = not trial_dirs and any((root / "eval").glob("*.jsonl"))
    if single:
        trial_dirs = [root]
    if not trial_dirs:
        raise StudyNotFoundError(f"no trial-NNNN directories in {root}: run the study first "
                                 f"(`harness run {root.name}`)", where=root)
    return trial_dirs, single


def _read_trials(root: Path, trial_dirs: list[Path], single: bool) -> list[_Trial]:
    """Each trial's records; a trial killed before it recorded its params gets them from the Optuna study."""
    trials = []
    db_params: dict[int, dict[str, Any]] | None = None  # read once, and only if some trial needs it
    for tdir in trial_dirs:
        trial = _read_trial(tdir, single)
        if not trial.params and trial.status == "incomplete":
            if db_params is None:
                db_params = _params_in_study_db(root)
            trial.params = db_params.get(trial.number, {})
        trials.append(trial)
    return trials


def _read_trial(tdir: Path, single: bool) -> _Trial:
    """One trial directory's result, manifest, metrics and (when complete) eval rows."""
    result = _read_optional_json(tdir / "result.json") or {}
    manifest = _read_optional_json(tdir / "manifest.json") or {}
    number = result.get("number", manifest.get("trial"))
    if number is None:
        number = 0 if single else int(tdir.name.split("-")[-1])
    status = result.get("status", "complete" if single else "incomplete")
    evals = {}
    if status == "complete":
        for eval_path in sorted((tdir / "eval").glob("*.jsonl")):
            evals[eval_path] = read_jsonl(eval_path)
    return _Trial(dir=tdir, number=int(number), status=status, result=result, manifest=manifest,
                  params=result.get("params") or manifest.get("params") or {},
                  metrics=_read_optional_json(tdir / "metrics.json") or {}, evals=evals)


def _untuned_arms(trials: list[_Trial], given: Iterable[str]) -> tuple[str, ...]:
    """`given`, then every arm the trials record as untuned or endpoint, or that a priced endpoint answered."""
    # An arm answered by a priced endpoint (rows with cost_usd) was never trained here.
    endpoint_arms = {row.get("arm") or path.stem for t in trials for path, rows in t.evals.items() for row in rows
                     if row.get("cost_usd") is not None}
    # Trials record their arms' roles (harness.results.arm_roles); the cost_usd rule covers older results.
    recorded = {arm for t in trials for arm, role in arm_roles(t.manifest).items() if role in ("untuned", "endpoint")}
    return tuple(dict.fromkeys([*given, *sorted(endpoint_arms | recorded)]))


def _training_only_prefixes(trials: list[_Trial]) -> tuple[str, ...]:
    """The training-only prefixes the manifests record (their union); the registry's for trials recorded
    before manifests said."""
    recorded = [t.manifest["training_only_prefixes"] for t in trials if "training_only_prefixes" in t.manifest]
    if not recorded:
        return training_only_prefixes()
    return tuple(dict.fromkeys(prefix for prefixes in recorded for prefix in prefixes))


def _single_dir_notes(root: Path) -> list[str]:
    """What a report says of a directory read as one trial: that it was, and each arm quant.json did not run."""
    notes = [f"{root} has no trial-NNNN directories: its eval/ folder is read as one trial"]
    quant = _read_optional_json(root / "quant.json") or {}
    for arm, info in sorted((quant.get("arms") or {}).items()):
        if isinstance(info, dict) and info.get("status") not in (None, "complete"):
            notes.append(f"arm '{arm}' {info.get('status')}: {info.get('reason') or 'no reason recorded'}")
    return notes


def _count_trials(trials: list[_Trial], varying: list[str], single: bool) -> list[str]:
    """Set each trial's seed and config label; a complete trial that records no seed counts as seed 0, and
    the notes returned say so."""
    notes = []
    for t in trials:
        t.seed = _seed_of(t.manifest, t.params)
        if t.seed is None and t.status == "complete":
            if not single:
                notes.append(f"trial {t.number:04d} records no seed (manifest 'seed' or param 'train.seed'): "
                             "counted as seed 0")
            t.seed = 0
        t.config = config_label(t.params, varying)
    return notes


def _grid(spec: dict[str, Any]) -> dict[str, list[Any]] | None:
    """The recorded spec's search grid: {} for a sampler's study, None when the spec has no search block."""
    search = spec.get("search")
    if not isinstance(search, dict):
        return None
    return dict(search.get("grid") or {}) if search.get("sampler", "grid") == "grid" else {}


# ---------------------------------------------------------------- the frames


def _trials_frame(trials: list[_Trial]) -> pd.DataFrame:
    """One row per trial: its status, seed, config, params and flattened metrics.json."""
    rows = []
    for t in trials:
        row: dict[str, Any] = {"number": t.number, "status": t.status, "reason": t.result.get("reason"),
                               "seed": t.seed, "split_hash": t.manifest.get("split_hash"), "config": t.config,
                               "objective": t.result.get("objective"), "path": str(t.dir)}
        row.update({k: v for k, v in t.params.items()})
        flat: dict[str, Any] = {}
        _flatten("", t.metrics, flat)
        row.update({(k if k.startswith("cost.") else f"metrics.{k}"): v for k, v in flat.items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("number", ignore_index=True)


def _train_log_frame(trials: list[_Trial]) -> pd.DataFrame:
    """Every logged training step of every trial, finished or not."""
    rows = []
    for t in trials:
        log_path = t.dir / "train_log.jsonl"
        # train_log.jsonl is the first training's (sft or kd): which one says what its loss is
        training = next(iter(t.manifest.get("trainings") or {}), "sft")
        if log_path.exists():
            for step in read_jsonl(log_path):
                rows.append({"trial": t.number, "seed": t.seed, "config": t.config, "status": t.status,
                             "training": training, **step})
    return pd.DataFrame(rows)


def _stage_log_frame(trials: list[_Trial]) -> pd.DataFrame:
    """Every logged step of every continuing stage's training (the files the stage registry names)."""
    from harness.stages.registry import all_stages

    files = {s.name: s.log_file for s in all_stages() if s.log_file}
    rows = []
    for t in trials:
        for stage, name in files.items():
            if (t.dir / name).exists():
                rows += [{"trial": t.number, "seed": t.seed, "config": t.config, "status": t.status, "stage": stage,
                          **step} for step in read_jsonl(t.dir / name)]
    return pd.DataFrame(rows)


def _dev_curve_frame(trials: list[_Trial]) -> pd.DataFrame:
    """Every dev-split checkpoint score of every trial, finished or pruned: `stage`, `step` (counted across the
    trial's trainings), `metric`, `value`."""
    rows = [{"trial": t.number, "seed": t.seed, "config": t.config, "status": t.status, **point}
            for t in trials if (t.dir / DEV_CURVE_FILE).exists() for point in read_jsonl(t.dir / DEV_CURVE_FILE)]
    return pd.DataFrame(rows)


def _costs_frame(trials: list[_Trial]) -> pd.DataFrame:
    """One row per complete trial: metrics.json's cost block, and what each training stage cost."""
    rows = []
    for t in trials:
        if t.status != "complete":
            continue
        training = t.metrics.get("training") or {}
        rows.append({"trial": t.number, "seed": t.seed, "config": t.config,
                     **{k: v for k, v in (t.metrics.get("cost") or {}).items()},
                     # for an arm evaluated between two trainings (sft before dpo): what it had cost so far
                     "stage_costs": training, "arm_trainings": _arm_trainings(t.manifest, training),
                     "arm_model_bytes": (t.manifest or {}).get("arm_model_bytes") or {}})
    return pd.DataFrame(rows)


def _items_frame(trials: list[_Trial], varying: list[str], untuned: tuple[str, ...],
                 training_only: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """One row per complete trial × arm × held-out item, each evaluation counted once; and a note when
    some were repeated."""
    frames = []
    for t in trials:
        if t.status != "complete":
            continue
        for eval_path, eval_rows in t.evals.items():
            rows = [_item_row(item, eval_path, t, varying, untuned, training_only) for item in eval_rows]
            if rows:
                frames.append(pd.DataFrame(rows))
    if not frames:
        return pd.DataFrame(columns=["trial", "seed", "arm", "arm_label", "item_id"]), []
    items = pd.concat(frames, ignore_index=True)
    items["item_id"] = items["item_id"].astype(str)
    before = len(items)
    # The same label, seed and item from several trials is one evaluation repeated (the base model,
    # evaluated again at every grid point): keep the earliest trial's row so pairing stays 1:1.
    items = items.sort_values(["trial"], kind="stable").drop_duplicates(
        ["arm_label", "seed", "item_id"], keep="first").reset_index(drop=True)
    notes = []
    if len(items) < before:
        notes.append(f"{before - len(items)} repeated per-item rows (same arm label, seed and item in several "
                     "trials, e.g. the base model evaluated at every grid point) were counted once")
    for col in ("latency_s", "input_tokens", "output_tokens"):
        if col in items:
            items[col] = pd.to_numeric(items[col], errors="coerce")
    return items, notes


def _item_row(item: dict[str, Any], eval_path: Path, t: _Trial, varying: list[str], untuned: tuple[str, ...],
              training_only: tuple[str, ...]) -> dict[str, Any]:
    """One eval row, flattened: its scores as `score.<metric>`, its trial, arm label and varying params."""
    arm = item.get("arm") or eval_path.stem
    row = {k: v for k, v in item.items() if k != "scores"}
    row.update({f"{SCORE_PREFIX}{m}": _score(v, eval_path, m) for m, v in (item.get("scores") or {}).items()})
    row.update({"trial": t.number, "seed": t.seed, "arm": arm,
                "arm_label": arm_label(arm, t.params, varying, untuned, training_only),
                "split_hash": t.manifest.get("split_hash")})
    # An untuned arm has no training params: leave them empty so it is not drawn at some rank.
    row.update({p: None if arm in untuned and p.startswith(training_only) else t.params.get(p) for p in varying})
    return row

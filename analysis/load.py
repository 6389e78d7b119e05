"""Every trial of a study, read from `results/<study>/trial-NNNN/` (layout: `harness.results`) into pandas.

An *arm label* names one model as the write-up compares it: the eval arm plus the params that differ
across the study's trials, e.g. `tuned[lora.r=16]`. Seeds are not part of the label: the seeds of one
label are its repeats. The untuned `base` arm is not affected by training params (`lora.*`, `train.*`),
so its label leaves them out, and the identical base evaluations that every trial of a seed repeats
collapse into one. The same holds for an endpoint contestant (its rows carry `cost_usd`): it was
asked, not trained.

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
from harness.results import arm_roles, read_json, read_jsonl
from harness.stats.factors import format_value

SEED_PARAMS = frozenset({"seed", "train.seed"})
# Params that change only how an adapter is trained: they cannot change what an untuned model answers.
# Params that change only how an arm is trained (its data, method, optimiser), never the untuned base model:
# an untuned arm is one arm across their levels.
TRAINING_ONLY_PREFIXES = ("lora.", "train.", "distill.", "dpo.", "grpo.")
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
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # the models it called: see `spec_endpoints`
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
        return arm_label(arm, params, self.varying_params, self.untuned_arms)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return (1, str(value))
    return (0, float(value)) if not math.isnan(float(value)) else (2, "")


def _is_training_only(key: str) -> bool:
    return key.startswith(TRAINING_ONLY_PREFIXES)


def config_label(params: dict[str, Any], keys: Iterable[str]) -> str:
    """`k=v,...` of `params` over `keys` (those it has), e.g. `lora.r=16,train.learning_rate=0.0002`."""
    return ",".join(f"{k}={format_value(params[k])}" for k in keys if k in params)


def arm_label(arm: str, params: dict[str, Any], varying: Iterable[str],
              untuned_arms: Iterable[str] = DEFAULT_UNTUNED_ARMS) -> str:
    """`arm[k=v,...]` over the varying params (training-only ones dropped for untuned arms)."""
    untuned = arm in set(untuned_arms)
    config = config_label(params, [k for k in varying if not (untuned and _is_training_only(k))])
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


def load_study(study_dir: str | Path, *, untuned_arms: Iterable[str] = DEFAULT_UNTUNED_ARMS) -> Study:
    """Read every trial under `study_dir` into a `Study`.

    - `trials`: one row per trial directory (failed and unfinished ones too): `number`, `status`,
      `reason`, `seed`, `split_hash`, `config` (label of the varying params), one column per param
      (dotted name), `objective`, and `metrics.<arm>.<name>` / `cost.<name>` from metrics.json.
    - `items`: one row per complete trial × arm × held-out item: `trial`, `seed`, `arm`, `arm_label`,
      `item_id`, `score.<metric>`, `latency_s`, `input_tokens`, `output_tokens`, `batch`, `cluster`,
      `split_hash`, and the varying params. Only complete trials: failed ones are never compared.
    - `train_log`: one row per logged training step of any trial, with `trial`, `seed`, `config`, `status`.
    - `costs`: one row per complete trial: `trial`, `seed`, `config` and metrics.json's cost block.
    """
    root = Path(study_dir)
    trial_dirs = sorted(p for p in root.glob("trial-*") if p.is_dir()) if root.is_dir() else []
    single = not trial_dirs and any((root / "eval").glob("*.jsonl"))
    if single:
        trial_dirs = [root]
    if not trial_dirs:
        raise StudyNotFoundError(f"no trial-NNNN directories in {root}: run the study first "
                                 f"(`harness run {root.name}`)", where=root)

    raw = []
    db_params: dict[int, dict[str, Any]] | None = None
    for tdir in trial_dirs:
        result = _read_optional_json(tdir / "result.json") or {}
        manifest = _read_optional_json(tdir / "manifest.json") or {}
        params = result.get("params") or manifest.get("params") or {}
        number = result.get("number", manifest.get("trial"))
        if number is None:
            number = 0 if single else int(tdir.name.split("-")[-1])
        status = result.get("status", "complete" if single else "incomplete")
        if not params and status == "incomplete":
            if db_params is None:
                db_params = _params_in_study_db(root)
            params = db_params.get(int(number), {})
        evals = {}
        if status == "complete":
            for eval_path in sorted((tdir / "eval").glob("*.jsonl")):
                evals[eval_path] = read_jsonl(eval_path)
        raw.append({"dir": tdir, "result": result, "manifest": manifest, "params": params, "number": int(number),
                    "status": status, "evals": evals, "metrics": _read_optional_json(tdir / "metrics.json") or {}})
    varying = _varying([r["params"] for r in raw])
    # An arm answered by a priced endpoint (rows with cost_usd) was never trained here.
    endpoint_arms = {row.get("arm") or path.stem for r in raw for path, rows in r["evals"].items() for row in rows
                     if row.get("cost_usd") is not None}
    # Trials record their arms' roles (harness.results.arm_roles); the cost_usd rule covers older results.
    recorded = {arm for r in raw for arm, role in arm_roles(r["manifest"]).items() if role in ("untuned", "endpoint")}
    untuned = tuple(dict.fromkeys([*untuned_arms, *sorted(endpoint_arms | recorded)]))

    trial_rows, item_frames, log_rows, cost_rows = [], [], [], []
    notes: list[str] = []
    if single:
        notes.append(f"{root} has no trial-NNNN directories: its eval/ folder is read as one trial")
        quant = _read_optional_json(root / "quant.json") or {}
        for arm, info in sorted((quant.get("arms") or {}).items()):
            if isinstance(info, dict) and info.get("status") not in (None, "complete"):
                notes.append(f"arm '{arm}' {info.get('status')}: {info.get('reason') or 'no reason recorded'}")
    for r in raw:
        params, manifest, tdir = r["params"], r["manifest"], r["dir"]
        seed = _seed_of(manifest, params)
        if seed is None and r["status"] == "complete":
            if not single:
                notes.append(f"trial {r['number']:04d} records no seed (manifest 'seed' or param 'train.seed'): "
                             "counted as seed 0")
            seed = 0
        config = config_label(params, varying)
        row: dict[str, Any] = {"number": r["number"], "status": r["status"], "reason": r["result"].get("reason"),
                               "seed": seed, "split_hash": manifest.get("split_hash"), "config": config,
                               "objective": r["result"].get("objective"), "path": str(tdir)}
        row.update({k: v for k, v in params.items()})
        flat: dict[str, Any] = {}
        _flatten("", r["metrics"], flat)
        row.update({(k if k.startswith("cost.") else f"metrics.{k}"): v for k, v in flat.items()})
        trial_rows.append(row)

        log_path = tdir / "train_log.jsonl"
        if log_path.exists():
            for step in read_jsonl(log_path):
                log_rows.append({"trial": r["number"], "seed": seed, "config": config, "status": r["status"], **step})
        if r["status"] != "complete":
            continue
        cost_rows.append({"trial": r["number"], "seed": seed, "config": config,
                          **{k: v for k, v in (r["metrics"].get("cost") or {}).items()},
                          # for an arm evaluated between two trainings (sft before dpo): what it had cost so far
                          "stage_costs": r["metrics"].get("training") or {},
                          "arm_trainings": _arm_trainings(manifest, r["metrics"].get("training") or {})})
        for eval_path, eval_rows in r["evals"].items():
            rows = []
            for item in eval_rows:
                arm = item.get("arm") or eval_path.stem
                flat_item = {k: v for k, v in item.items() if k != "scores"}
                flat_item.update({f"{SCORE_PREFIX}{m}": _score(v, eval_path, m)
                                  for m, v in (item.get("scores") or {}).items()})
                flat_item.update({"trial": r["number"], "seed": seed, "arm": arm,
                                  "arm_label": arm_label(arm, params, varying, untuned),
                                  "split_hash": manifest.get("split_hash")})
                # An untuned arm has no training params: leave them empty so it is not drawn at some rank.
                flat_item.update({p: None if arm in untuned and _is_training_only(p) else params.get(p)
                                  for p in varying})
                rows.append(flat_item)
            if rows:
                item_frames.append(pd.DataFrame(rows))

    trials = pd.DataFrame(trial_rows).sort_values("number", ignore_index=True)
    items = pd.concat(item_frames, ignore_index=True) if item_frames else pd.DataFrame(
        columns=["trial", "seed", "arm", "arm_label", "item_id"])
    if not items.empty:
        items["item_id"] = items["item_id"].astype(str)
        before = len(items)
        # The same label, seed and item from several trials is one evaluation repeated (the base model,
        # evaluated again at every grid point): keep the earliest trial's row so pairing stays 1:1.
        items = items.sort_values(["trial"], kind="stable").drop_duplicates(
            ["arm_label", "seed", "item_id"], keep="first").reset_index(drop=True)
        if len(items) < before:
            notes.append(f"{before - len(items)} repeated per-item rows (same arm label, seed and item in several "
                         "trials, e.g. the base model evaluated at every grid point) were counted once")
        for col in ("latency_s", "input_tokens", "output_tokens"):
            if col in items:
                items[col] = pd.to_numeric(items[col], errors="coerce")
    first_spec = next((r["manifest"].get("spec") or {} for r in raw if r["status"] == "complete"), {})
    search = first_spec.get("search")
    grid = None if not isinstance(search, dict) else (
        dict(search.get("grid") or {}) if search.get("sampler", "grid") == "grid" else {})
    return Study(
        name=root.name, path=root, trials=trials, items=items,
        train_log=pd.DataFrame(log_rows), costs=pd.DataFrame(cost_rows), varying_params=varying,
        headline_metric=(first_spec.get("eval") or {}).get("metric"),
        project=(first_spec.get("tracking") or {}).get("project"),
        device_price_per_hour=(first_spec.get("pricing") or {}).get("device_price_per_hour"),
        untuned_arms=untuned, notes=notes, grid=grid,
        report_reference=dict((first_spec.get("report") or {}).get("reference") or {}),
        endpoints=spec_endpoints(first_spec))

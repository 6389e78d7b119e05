"""The `harness` command: list, run, worker, status, dashboard, report, bench, data, check."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.backends.registry import backend_choices
from harness.errors import HarnessError
from harness.grid.outcome import EXIT_BAD_INPUT, EXIT_STATUS
from harness.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune small LMs with LoRA/QLoRA and prove with statistics what each change did.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and freeze datasets.")
app.add_typer(data_app, name="data")
study_app = typer.Typer(no_args_is_help=True, help="Manage a study's storage.")
app.add_typer(study_app, name="study")

PRESET = typer.Option(None, "--preset", "-p", help="apply a named block of the spec's `presets:` (e.g. smoke)")
STORAGE = typer.Option(None, "--storage", help="Optuna storage URL (default: results/NAME/study.db for one worker, "
                       "a journal file results/NAME/study.journal for several; PostgreSQL across nodes)")
RESULTS = typer.Option(None, "--results", help="results root (default: $HARNESS_RESULTS or ./results)")
SET = typer.Option(None, "--set", help="override a spec field: --set train.learning_rate=1e-4 (repeatable)")


def _or(choices) -> str:
    """"a, b or c" for a help text."""
    *rest, last = choices
    return f"{', '.join(rest)} or {last}" if rest else last


def _results_root(results: Optional[Path]) -> Path:
    # Absolute: these paths reach subprocesses and libraries that may run in another directory.
    return Path(results or os.environ.get("HARNESS_RESULTS") or "results").absolute()


def _parse_sets(sets: Optional[list[str]]) -> dict:
    import yaml

    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"--set {item}: expected key=value, e.g. train.learning_rate=1e-4")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _load(name: str, preset: Optional[str], sets: Optional[list[str]] = None):
    from harness.experiments import find_experiment
    from harness.spec import load_spec

    spec = load_spec(find_experiment(name), preset=preset, overrides=_parse_sets(sets))
    if preset:  # a preset is a different study: its trials must not mix with the full one's
        spec.name = f"{spec.name}-{preset}"
    return spec


def _storage(spec, storage: Optional[str], results: Optional[Path], workers: int = 1) -> tuple[Path, str]:
    """The study folder and storage URL: the one given (checked for `workers` writers), else the local one."""
    from harness.grid.storage import check_storage, local_storage

    study_dir = _results_root(results) / spec.name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or local_storage(study_dir, workers)
    check_storage(url, workers, migrate_hint="" if storage else f"harness study migrate {spec.name} --to journal")
    return study_dir, url


@app.command("list")
def list_experiments() -> None:
    """Show every registered experiment with the question it answers."""
    from harness.experiments import registered

    table = Table("experiment", "question", "file", title="registered experiments")
    for exp in registered().values():
        table.add_row(exp.name, exp.description, str(exp.path))
    console.print(table)


@app.command()
def check(name: str, preset: Optional[str] = PRESET, set_: Optional[list[str]] = SET) -> None:
    """Validate an experiment spec, print its grid, and run `harness run`'s preflight (data files exist and parse,
    the frozen split verifies, no leaks; models and teachers resolve; every stage's own checks), without
    loading a model or freezing anything."""
    from harness.grid.study import trial_spec, validate_search
    from harness.trial.runner import preflight

    spec = _load(name, preset, set_)
    points = validate_search(spec)
    specs = [trial_spec(spec, p.params) for p in points]
    data = _check_data(specs)
    preflight(specs, freeze=False)
    console.print(f"[green]ok[/green] {spec.name}: {len(points)} trial(s)")
    for p in points:
        console.print(f"  {p.index}: {p.params}")
    for line in data:
        console.print(f"  data: {line}", highlight=False, soft_wrap=True)


def _check_data(specs) -> list[str]:
    """One line per distinct data section of the grid's trials, after the same checks a run makes first."""
    from harness.data.prepare import prepare_data
    from harness.models import harness_home

    lines: dict[str, str] = {}
    for spec in specs:
        key = spec.data.model_dump_json()
        if key not in lines:
            data = prepare_data(spec.data, harness_home() / "data", freeze=False)
            frozen = "frozen" if data.split.manifest.exists() else "not frozen yet: the first run freezes it"
            lines[key] = (f"{data.source}: {len(data.train)} train, {len(data.dev)} dev, "
                          f"{len(data.heldout)} held-out ({frozen})")
    return list(lines.values())


@app.command(epilog=EXIT_STATUS)
def run(name: str, preset: Optional[str] = PRESET, storage: Optional[str] = STORAGE,
        results: Optional[Path] = RESULTS, set_: Optional[list[str]] = SET,
        max_trials: Optional[int] = typer.Option(None, help="stop after this many trials (the rest stay queued)"),
        gpus: Optional[str] = typer.Option(None, help="one worker process per GPU: all, or indices such as 0,1,3"),
        per_gpu: int = typer.Option(1, "--per-gpu", help="worker processes per GPU (small models on a big GPU)"),
        workers: Optional[int] = typer.Option(None, help="N worker processes without GPUs (CPU)")) -> None:
    """Start or resume an experiment's study and run its trials until the grid is done.

    With --gpus or --workers, one worker process per slot works on the same study (see `harness.grid.launch`)."""
    if gpus is not None or workers is not None or per_gpu != 1:
        if gpus is None and per_gpu != 1:
            raise HarnessError("--per-gpu applies to --gpus")
        if max_trials is not None:
            raise HarnessError("--max-trials applies to a single-process run (without --gpus or --workers)")
        return _launch(name, preset, storage, results, set_ or [], gpus, per_gpu, workers)
    from harness.backends.unsloth import import_first_if_present

    import_first_if_present()
    from harness.grid.study import open_study, run_worker

    spec = _load(name, preset, set_)
    study_dir, url = _storage(spec, storage, results)
    study = open_study(spec, url, create=True)
    _preflight(spec, study)
    try:
        run_worker(spec, study, study_dir, max_trials=max_trials)
    except KeyboardInterrupt:
        _finish(study, study_dir, spec.eval.metric, interrupted="SIGINT")
    _finish(study, study_dir, spec.eval.metric)


def _launch(name, preset, storage, results, sets, gpus, per_gpu, workers) -> None:
    """Every check before a worker starts; then the launch; then the same table as a single run."""
    from harness.grid.gpus import plan_slots
    from harness.grid.launch import launch, worker_command
    from harness.grid.study import open_study

    slots = plan_slots(gpus, per_gpu, workers, warn=lambda m: console.print(f"[yellow]warning:[/yellow] {m}"))
    spec = _load(name, preset, sets)
    study_dir, url = _storage(spec, storage, results, workers=len(slots))
    study = open_study(spec, url, create=True)
    _preflight(spec, study)
    outcome = launch(study, slots, worker_command(name, url, _results_root(results), preset, sets),
                     study_dir / "logs", out=lambda m: console.print(m, highlight=False, soft_wrap=True))
    _finish(study, study_dir, spec.eval.metric, interrupted=outcome.interrupted)


@app.command(epilog=EXIT_STATUS)
def worker(name: str, storage: str = typer.Option(..., "--storage", help="the study's storage URL"),
           preset: Optional[str] = PRESET, results: Optional[Path] = RESULTS,
           set_: Optional[list[str]] = SET,
           create: bool = typer.Option(False, "--create", help="create the study if no one has yet (Slurm tasks)")) -> None:
    """Join a running study from another process or machine and work through its queue."""
    from harness.backends.unsloth import import_first_if_present

    import_first_if_present()
    from harness.grid.study import open_study, run_worker

    spec = _load(name, preset, set_)
    study_dir, url = _storage(spec, storage, results)
    study = open_study(spec, url, create=create)
    _preflight(spec, study)
    try:
        run_worker(spec, study, study_dir)
    except KeyboardInterrupt:
        _finish(study, study_dir, spec.eval.metric, interrupted="SIGINT", table=False)
    _finish(study, study_dir, spec.eval.metric, table=False)


@app.command()
def slurm(name: str, storage: str = typer.Option(..., "--storage", help="PostgreSQL URL every node can reach"),
          nodes: int = typer.Option(1, help="nodes to allocate"),
          gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (0: CPU tasks)"),
          per_gpu: int = typer.Option(1, "--per-gpu", help="worker processes per GPU"),
          partition: Optional[str] = typer.Option(None, help="sbatch --partition"),
          time_: Optional[str] = typer.Option(None, "--time", help="sbatch --time, e.g. 04:00:00"),
          cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", help="sbatch --cpus-per-task"),
          sbatch_opt: Optional[list[str]] = typer.Option(None, "--sbatch", help="another sbatch option, e.g. "
                                                         "--sbatch=--account=lab (repeatable)"),
          preset: Optional[str] = PRESET, results: Optional[Path] = RESULTS, set_: Optional[list[str]] = SET,
          submit: bool = typer.Option(False, help="run sbatch and print the job id"),
          out: Optional[Path] = typer.Option(None, help="where to write the script (default results/NAME/slurm.sh)")) -> None:
    """Write a Slurm batch script that runs the study on N nodes x G GPUs (one `harness worker` per GPU)."""
    from shutil import which

    from harness.grid.slurm import SlurmJob, sbatch, write_script
    from harness.grid.storage import check_storage, open_storage
    from harness.grid.study import validate_search

    spec = _load(name, preset, set_)
    job = SlurmJob(experiment=name, storage=storage, results=_results_root(results), nodes=nodes,
                   gpus_per_node=gpus_per_node, per_gpu=per_gpu, cpus_per_task=cpus_per_task, partition=partition,
                   time=time_, preset=preset, sets=set_ or [], extra=sbatch_opt or [], name=spec.name)
    job.check()
    check_storage(storage, nodes * job.tasks_per_node, hosts=nodes)
    open_storage(storage)  # a URL that does not answer fails here, not in every task
    validate_search(spec)
    path = write_script(job, (out or _results_root(results) / spec.name / "slurm.sh").absolute())
    console.print(f"wrote {path} ({nodes} node(s) x {job.tasks_per_node} task(s))", highlight=False)
    if which("sbatch"):
        sbatch(path, test_only=True)  # Slurm refuses a bad option now, with its own message
    if submit:
        job_id = sbatch(path, test_only=False).splitlines()[-1].split(";")[0]
        console.print(f"submitted job {job_id}; follow it with `harness status {name} --storage ...`")
        print(job_id)  # stdout: for scripts


@app.command()
def plan(name: str, gpus: int = typer.Option(1, "--gpus", help="how many GPUs the grid will run on"),
         device: str = typer.Option("h100", help="h100, h200, a100, gb10 or cpu"),
         preset: Optional[str] = PRESET, storage: Optional[str] = STORAGE, results: Optional[Path] = RESULTS,
         set_: Optional[list[str]] = SET) -> None:
    """Before launching: the grid's size, each point's memory and tokens, time on N GPUs and its price."""
    import optuna

    from harness.grid.plan import plan_grid
    from harness.grid.plan_text import format_plan
    from harness.grid.storage import open_storage

    spec = _load(name, preset, set_)
    study_dir, url = _storage(spec, storage, results)
    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    except KeyError:
        study = None
    print(format_plan(plan_grid(spec, device, gpus, _results_root(results), study), spec.name, console.width))


@app.command()
def status(name: str, preset: Optional[str] = PRESET, storage: Optional[str] = STORAGE,
           results: Optional[Path] = RESULTS) -> None:
    """Print a table of the study's trials: state, params, key metrics, duration."""
    import optuna

    from harness.grid.study import open_storage

    spec = _load(name, preset)
    _, url = _storage(spec, storage, results)
    try:
        study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
    except KeyError:
        raise HarnessError(f"no study '{spec.name}' yet in {url}: start it with `harness run {name}`")
    from harness.grid.outcome import NOT_RUN_PREFIX, requeued_numbers, trial_outcome
    from harness.labels import labeller
    from harness.results import final_arm, read_json, trial_dir_name

    study_dir = _results_root(results) / spec.name
    trials = study.get_trials(deepcopy=False)
    requeued = requeued_numbers(trials)
    label = labeller(study.user_attrs.get("points") or [t.user_attrs.get("params", {}) for t in trials])
    table = Table(title=f"study {spec.name}: {spec.eval.metric} on the held-out split", box=None)
    # 80 columns (a Slurm log): fixed columns never cut; params and the reason wrap instead of losing words.
    for col in ("#", "outcome", "params", "where", "base", "final", "arm", "time"):
        table.add_column(col, no_wrap=col not in ("params", "where"), overflow="fold",
                         justify="right" if col in ("#", "base", "final", "time") else "left",
                         max_width={"params": 24, "where": 16}.get(col))
    reasons: list[str] = []
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        manifest_path = study_dir / trial_dir_name(t.number) / "manifest.json"
        final = final_arm(read_json(manifest_path) if manifest_path.exists() else {}, m)
        dur = t.user_attrs.get("duration_s")
        outcome = trial_outcome(t, requeued)
        table.add_row(str(t.number), outcome.words, label(t.user_attrs.get("params", {})), _where(t),
                      _metric(m, "base", spec.eval.metric), _metric(m, final, spec.eval.metric),
                      final if m else "–", f"{dur:.0f}s" if dur else "–")
        if t.user_attrs.get("reason"):
            reason = str(t.user_attrs["reason"]).removeprefix(NOT_RUN_PREFIX)
            reasons.append(f"trial {t.number} {outcome.words}: {_first_line(reason)}")
    console.print(table)
    for line in reasons:  # one line each under the table, as at the end of a run
        console.print(line, highlight=False, soft_wrap=True)


def _where(trial) -> str:
    """node/gpu (or host/cpu) that ran a trial."""
    w = trial.user_attrs.get("worker") or {}
    if not w:
        return "–"
    device = f"gpu{w['gpu']}" if w.get("gpu") not in (None, "") else "cpu"
    return f"{w.get('node') or w.get('host', '?')}/{device}"


def _metric(metrics: dict, arm: str, name: str) -> str:
    value = (metrics.get(arm) or {}).get(name)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


@app.command()
def dashboard(name: str, preset: Optional[str] = PRESET, storage: Optional[str] = STORAGE,
              results: Optional[Path] = RESULTS, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard on the study's storage."""
    from optuna_dashboard import run_server

    spec = _load(name, preset)
    _, url = _storage(spec, storage, results)
    console.print(f"optuna-dashboard on http://{host}:{port} for {url}")
    run_server(url, host=host, port=port)


@app.command()
def report(name: str, preset: Optional[str] = PRESET, results: Optional[Path] = RESULTS,
           baseline: str = typer.Option("base", help="the arm every other arm is compared with"),
           tolerance: Optional[float] = typer.Option(
               None, help="equivalence margin, a share of each metric's range (default: report.tolerance, else "
                          "0.02): a CI inside ±it reads equivalent, one past it inconclusive"),
           set_: Optional[list[str]] = SET) -> None:
    """Write results/NAME/report.md and report.json: significance-tested tables and figures."""
    from analysis.report import build_report
    from analysis.wandb_logging import log_report_to_wandb

    spec = _load(name, preset, set_)
    study_dir = _results_root(results) / spec.name
    paths = build_report(study_dir, baseline=baseline, metric=spec.eval.metric, reference=spec.report.reference,
                         tolerance=tolerance if tolerance is not None else spec.report.tolerance)
    log_report_to_wandb(paths, spec.name, project=spec.tracking.project,
                        mode=None if spec.tracking.wandb == "auto" else spec.tracking.wandb)
    console.print(f"wrote {paths.markdown} and {paths.json}")


@app.command()
def regress(baseline: str = typer.Option(..., "--baseline", help="a base model name or a trial directory"),
            candidate: str = typer.Option(..., "--candidate", help="a base model name or a trial directory"),
            tasks: str = typer.Option(..., "--tasks", help="comma list, e.g. arc_easy_local,piqa_local"),
            tolerance: float = typer.Option(0.02, help="the largest accuracy difference that does not matter, in "
                                            "(0, 1): equivalence needs the 95% CI inside ±tolerance"),
            alpha: float = typer.Option(0.05, help="significance level (Holm-adjusted across tasks)"),
            limit: Optional[int] = typer.Option(None, help="items per task"),
            out: Path = typer.Option(Path("results/regress"), "--out")) -> None:
    """Is the candidate worse than the baseline on general-capability tasks, equivalent, or can the items not say?

    Exit 0: every task equivalent within ±tolerance (or significantly better); 1: a task regressed (a
    significant drop past the tolerance); 3: inconclusive (no regression, no equivalence shown; the items that
    would decide are printed); 2: bad input.
    """
    from harness.capabilities.regress import regress_command

    raise typer.Exit(regress_command(baseline, candidate, tasks, tolerance=tolerance, alpha=alpha, limit=limit,
                                     out=out.absolute()))


@app.command()
def forgetting(name: str, tasks: str = typer.Option(..., "--tasks", help="comma list of lm-eval tasks"),
               limit: Optional[int] = typer.Option(None, help="items per task"), preset: Optional[str] = PRESET,
               results: Optional[Path] = RESULTS) -> None:
    """Catastrophic-forgetting check: base vs each tuned trial of a study on general-capability tasks."""
    from harness.capabilities.forgetting import forgetting_check

    spec = _load(name, preset)
    path = forgetting_check(_results_root(results) / spec.name, [t.strip() for t in tasks.split(",") if t.strip()],
                            limit)
    console.print(f"wrote {path}")


@app.command()
def publish(trial: Path = typer.Argument(..., help="a trial directory, e.g. results/quickstart/trial-0000"),
            out: Optional[Path] = typer.Option(None, help="folder to write (default: TRIAL/publish)"),
            repo_id: Optional[str] = typer.Option(None, help="upload to this Hub repo (needs HF_TOKEN and network)"),
            merged: bool = typer.Option(False, help="also write the merged model"),
            gguf: Optional[list[str]] = typer.Option(None, help="also export GGUF types, e.g. --gguf q8_0 --gguf q4_k_m")) -> None:
    """Write a Hub-ready folder: adapter, model card with CIs and failure modes (+ merged / GGUF)."""
    from harness.export.publish import publish as publish_trial

    done = publish_trial(trial.absolute(), out.absolute() if out else None, repo_id=repo_id, merged=merged,
                         gguf=tuple(gguf or ()))
    console.print(f"[green]published[/green] {done.folder}: {done.note}")


@app.command()
def bench(arch: str = typer.Option("random:llama-3.2-1b", help="a random-init architecture: random:<arch>"),
          mode: str = typer.Option("lora", help="lora (bf16) or qlora (4-bit NF4, CUDA)"),
          backend: str = typer.Option("auto", help=f"{_or(backend_choices())} (as train.backend)"),
          checkpointing: str = typer.Option("true", help="true, false or auto (memory-aware)"),
          data: str = typer.Option("random", help="random (full-length tokens) or realestate (real lengths, packed)"),
          batch_size: int = typer.Option(4, "--batch-size"), seq: int = typer.Option(2048),
          steps: int = typer.Option(10, help="timed steps (median)"), warmup: int = typer.Option(3),
          method: str = typer.Option("sft", help="sft (the SFT step) or dpo (a DPO step over random pairs)"),
          reference: Optional[Path] = typer.Option(None, help="the raw loop (default harness/lora_reference.py)"),
          no_reference: bool = typer.Option(False, "--no-reference", help="measure the harness path only"),
          repeat: int = typer.Option(1, help="alternate harness and raw loop this many times (the spread)"),
          eval_: bool = typer.Option(False, "--eval", help="time eval generation batched vs one at a time instead"),
          eval_model: str = typer.Option("smollm2-135m-instruct", help="model for --eval"),
          eval_items: int = typer.Option(100, help="held-out items for --eval"),
          sequential_items: Optional[int] = typer.Option(None, help="time one-at-a-time on this many (default all)"),
          results: Optional[Path] = RESULTS) -> None:
    """Measure the harness's training (or eval) path beside the raw reference loop; save to results/bench/."""
    import yaml

    from harness import bench as b

    ref = None if no_reference else (reference or b.DEFAULT_REFERENCE)
    if eval_:
        result = b.bench_eval(eval_model, items=eval_items, sequential_items=sequential_items)
    elif method == "dpo":
        result = b.bench_dpo(arch, batch_size=batch_size, seq=seq, steps=steps, warmup=warmup, backend=backend,
                             reference=ref, repeat=repeat)
    elif method == "sft":
        gc = yaml.safe_load(checkpointing)
        if gc not in (True, False, "auto"):
            raise HarnessError(f"--checkpointing {checkpointing}: expected true, false or auto")
        result = b.bench_training(arch, mode, batch_size=batch_size, seq=seq, steps=steps, warmup=warmup,
                                  backend=backend, checkpointing=gc, data=data, reference=ref, repeat=repeat)
    else:
        raise HarnessError(f"--method {method}: expected sft or dpo")
    path = b.save(result, _results_root(results))
    console.print(b.format_result(result), highlight=False)
    console.print(f"saved {path}")
    failed = result.get("error") or result.get("harness", {}).get("error")
    if failed:
        raise typer.Exit(1)


@study_app.command("migrate")
def study_migrate(name: str, to: str = typer.Option(..., "--to", help="journal, sqlite, or a storage URL "
                                                                      "(e.g. postgresql+psycopg2://...)"),
                  from_: Optional[str] = typer.Option(None, "--from", help="source URL (default: the local one)"),
                  preset: Optional[str] = PRESET, results: Optional[Path] = RESULTS) -> None:
    """Copy a study with every trial to another storage (e.g. SQLite -> journal before a multi-worker launch)."""
    from harness.grid import storage as st

    spec = _load(name, preset)
    study_dir = _results_root(results) / spec.name
    source = from_ or st.local_storage(study_dir)
    target = {"journal": st.journal_url(study_dir), "sqlite": st.sqlite_url(study_dir)}.get(to, to)
    if target == source:
        raise HarnessError(f"--to {to}: the study already lives there ({source})")
    copied = st.migrate(spec.name, source, target)
    moved = ""
    for local in (st.sqlite_url(study_dir), st.journal_url(study_dir)):
        if source == local:  # the local default must now find the new storage, not the old file
            path = Path(local.split(":///", 1)[-1] if local.startswith("sqlite") else local[len(st.JOURNAL):])
            path.rename(path.with_name(path.name + ".migrated"))
            moved = f"; the old file is kept as {path.name}.migrated"
    console.print(f"[green]migrated[/green] {spec.name}: {copied} trial(s) from {source} to {target}{moved}")
    if target not in (st.sqlite_url(study_dir), st.journal_url(study_dir)):
        console.print(f"use it with --storage {target}")


@data_app.command("freeze")
def data_freeze(name: str, preset: Optional[str] = PRESET,
                force: bool = typer.Option(False, help="re-freeze a held-out split that changed (deliberately)")) -> None:
    """Freeze (hash) the experiment's held-out split before any training; verify it if already frozen."""
    from harness.data.prepare import prepare_data
    from harness.models import harness_home

    spec = _load(name, preset)
    data = prepare_data(spec.data, harness_home() / "data", refreeze=force)
    console.print(f"[green]frozen[/green] {len(data.heldout)} held-out items, split hash {data.split.split_hash}")


@data_app.command("summary")
def data_summary(name: str, preset: Optional[str] = PRESET) -> None:
    """Counts and token-length percentiles of the experiment's data under its model's tokenizer."""
    from harness.data.formats import format_summary, summarize
    from harness.data.prepare import prepare_data
    from harness.models import harness_home, load_tokenizer, resolve_model

    spec = _load(name, preset)
    data = prepare_data(spec.data, harness_home() / "data")
    tok = load_tokenizer(resolve_model(spec.model.base))
    for split, items in (("train", data.train), ("dev", data.dev), ("held-out", data.heldout)):
        if items:
            console.print(f"[bold]{split}[/bold]")
            console.print(format_summary(summarize(items, tok)))
    for line in _review_lines(name, spec, data):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


def _review_lines(name: str, spec, data) -> list[str]:
    """The review state of the training and held-out files, and the duplicates the leak guard sees within each."""
    from harness.data.prepare import data_files
    from harness.data.review import log_path, original_path, provenance_line, review_state
    from harness.data.split import duplicates
    from harness.models import harness_home

    train_path, heldout_path, _, _, _ = data_files(spec.data, harness_home() / "data")
    lines = []
    if data.review:
        lines.append(f"review (train, {train_path.name}, verified against its log): {data.review['provenance']}")
    for split, path in (("train", original_path(train_path) or train_path), ("held-out", heldout_path)):
        if (split == "held-out" or not data.review) and log_path(path).exists():
            s = review_state(path, format=spec.data.format)
            lines.append(f"review ({split}, {path.name}): {s['pairs'] - s['undecided']} of {s['pairs']} pairs decided, "
                         f"{s['batches_closed']}/{s['batches']} batches closed: {provenance_line(s)}")
        elif split == "train" and not data.review:
            lines.append(f"review (train): none yet (`harness data review {name}`)")
    for split, items in (("train", data.train + data.dev), ("held-out", data.heldout)):
        groups = duplicates(items)
        if groups:
            lines.append(f"{split}: {sum(len(g) for g in groups)} items in {len(groups)} groups of duplicates "
                         "(same prompt, or prompt and output, ignoring case, whitespace and end punctuation):")
            lines.extend("  " + " = ".join(f"{ex.id} ({ex.origin})" if ex.origin else ex.id for ex in g)
                         for g in groups[:20])
            if len(groups) > 20:
                lines.append(f"  ... and {len(groups) - 20} more groups")
    return lines


@data_app.command("review")
def data_review(name: str, preset: Optional[str] = PRESET,
                heldout: bool = typer.Option(False, "--heldout", help="review the frozen held-out split instead "
                                             "(a fix or delete there means re-freezing it)"),
                reviewer: Optional[str] = typer.Option(None, help="your name in the audit log "
                                                       "(default: $HARNESS_REVIEWER, else $USER)"),
                port: int = typer.Option(8765, help="port on 127.0.0.1 (0: any free one)"),
                diff: bool = typer.Option(False, "--diff", help="print what the review changed and exit")) -> None:
    """Review every pair in a browser, in batches of 50: keep, fix or delete, each decision logged beside the data."""
    from harness.data.formats import load_examples
    from harness.data.prepare import data_files
    from harness.data.review import Review, original_path, reviewer_name
    from harness.data.split import ensure_frozen
    from harness.models import harness_home

    spec = _load(name, preset)
    who = reviewer_name(reviewer) if not diff else ""
    train_path, heldout_path, _, _, built = data_files(spec.data, harness_home() / "data")
    held = built[1] if built else load_examples(heldout_path, spec.data.format)
    # The held-out split is frozen before anyone looks at the training side, so a review cannot drift into it.
    split = ensure_frozen(held, heldout_path)
    # A spec that trains on the reviewed file reviews its original: the reviewed file is derived, never edited.
    review = Review.open(heldout_path if heldout else original_path(train_path) or train_path,
                         format=spec.data.format, mode="heldout" if heldout else "train")
    if review.history and not diff:
        review.write_reviewed()  # re-derived from the original plus the log: a stale or edited copy is replaced
    if diff:
        import json

        for row in review.diff():
            console.print(json.dumps(row, ensure_ascii=False), highlight=False, soft_wrap=True, markup=False)
        return
    note = (f"This is the frozen held-out split ({split.count} items, frozen {split.created}). Keeping changes "
            "nothing; a fix or a delete changes the split: runs refuse it until you re-freeze with "
            f"`harness data freeze {name} --force`, and scores from before and after do not compare."
            if heldout else None)
    from harness.review.server import bind, make_app, serve

    sock = bind(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    s = review.summary()
    console.print(f"reviewing {review.data_path} ({s['pairs']} pairs, {s['batches_closed']}/{s['batches']} batches "
                  f"closed); decisions go to {review.log_path}", highlight=False, soft_wrap=True)
    console.print(f"open {url}  (Ctrl-C stops; every decision is already on disk)", highlight=False, soft_wrap=True)
    serve(make_app(review, who, note), sock)


@data_app.command("draft")
def data_draft(inputs: Path = typer.Argument(..., help="a JSONL/CSV/parquet file of inputs without outputs: prompt, "
                                             "instruction (+ input) or messages; optional id, cluster"),
               out: Path = typer.Option(..., "--out", help="the drafted dataset to write (point data.train at it)"),
               url: str = typer.Option(..., "--url", help="the endpoint's base URL, e.g. http://127.0.0.1:8080/v1"),
               model: str = typer.Option(..., "--model", help="the model name the endpoint serves"),
               api_key_env: Optional[str] = typer.Option(None, help="environment variable holding the API key"),
               price_input_per_m: float = typer.Option(0.0, help="USD per million input tokens"),
               price_output_per_m: float = typer.Option(0.0, help="USD per million output tokens"),
               max_tokens: int = typer.Option(512, help="most tokens per drafted output"),
               temperature: float = typer.Option(0.0, help="sampling temperature"),
               max_retries: int = typer.Option(4, help="retries of a failed call, with backoff")) -> None:
    """Draft the outputs of a file of inputs with an OpenAI-compatible model, to review with `harness data review`.

    Every call is cached beside the output (`OUT.draft-cache/`): a draft the endpoint stopped resumes where it
    stopped when run again, paying only for what is not drafted yet."""
    from pydantic import ValidationError

    from harness.config.endpoint import EndpointSpec
    from harness.review.draft import draft

    try:
        spec = EndpointSpec(url=url, model=model, api_key_env=api_key_env, price_input_per_m=price_input_per_m,
                            price_output_per_m=price_output_per_m, max_tokens=max_tokens, temperature=temperature,
                            max_retries=max_retries)
    except ValidationError as e:
        problems = "; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}"
                             for err in e.errors())
        raise HarnessError(f"bad endpoint: {problems}") from None
    result = draft(inputs, out, spec)
    console.print(f"[green]drafted[/green] {result.pairs} pairs with {result.model} into {result.out} "
                  f"({result.cached} from the cache; ${result.cost_usd:.4f} at the given prices, "
                  f"${result.paid_usd:.4f} paid this run)", highlight=False, soft_wrap=True)
    console.print(f"review them: point data.train at {result.out}, then `harness data review NAME`",
                  highlight=False, soft_wrap=True)


def _preflight(spec, study) -> None:
    from harness.grid.study import trial_spec
    from harness.trial.runner import preflight

    preflight([trial_spec(spec, params) for params in study.user_attrs["points"]])


def _finish(study, study_dir: Path, headline: str, *, interrupted: str | None = None, table: bool = True) -> None:
    """The end of every run (single, worker, launch): the table, what each grid point came to, the exit
    status (`harness.grid.outcome`)."""
    from harness.grid.outcome import exit_status, tally
    from harness.results import Outcome

    if table:
        _print_verdict(study_dir, headline)
    counts = tally(study)
    console.print(counts.summary(), highlight=False)
    if interrupted:
        console.print(f"[yellow]stopped by {interrupted}[/yellow]: its running trials are re-queued; "
                      "the same command resumes the study.", highlight=False)
    elif counts[Outcome.FAILED]:
        console.print(f"[red]{counts[Outcome.FAILED]} trial(s) failed[/red]; the others are recorded. "
                      "`harness status` shows why.", highlight=False)
    raise typer.Exit(exit_status(counts, interrupted is not None))


_NOT_SCORES = {"n", "busy_s", "latency_p50_s", "latency_p95_s", "tokens_per_s"}


def _score_columns(arm_metrics: list[dict], headline: str, most: int = 4) -> list[str]:
    """The headline metric, then the arms' other aggregate scores (per-field and per-rule detail left to
    the report), exact match last: free-text tasks show chrF or format rules, not JSON columns."""
    keys = {k for m in arm_metrics for k in m if k not in _NOT_SCORES and "." not in k}
    rest = sorted(keys - {headline}, key=lambda k: (k == "exact_match", k))
    head = [headline] if headline in keys else []
    return head + rest[: most - len(head)]


def _cell(value: float | None, fraction: bool = False) -> str:
    """One figure of the end-of-run table; "–" where the arm has none (an endpoint reports no tokens/s)."""
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if fraction else f"{value:.1f}"


def _print_verdict(study_dir: Path, headline: str) -> None:
    from harness.labels import labeller
    from harness.results import RESULT_FILE, Outcome, TrialResult, trial_dir_name

    from harness.evaluation.metrics import score_spec
    from harness.stages.registry import CORE_BLOCKS, all_stages

    failures: list[str] = []
    results = [r for r in (TrialResult.read(d) for d in sorted(study_dir.glob("trial-*"))) if r is not None]
    blocks = {*CORE_BLOCKS, *(b for stage in all_stages() for b in stage.blocks)}  # cost, teacher, forgetting…
    arms = {r.number: {arm: m for arm, m in r.metrics.items() if isinstance(m, dict) and "n" in m
                       and arm not in blocks} for r in results if r.status == Outcome.COMPLETE}
    every = [m for by_arm in arms.values() for m in by_arm.values()]
    columns = _score_columns(every, headline)
    # A percentage only for a score declared in [0, 1]: a KL of 0.175 nats is not 17.5%.
    fractions = {c for c in columns if (score_spec(c).low, score_spec(c).high) == (0, 1)
                 and all(0 <= (m.get(c) or 0) <= 1 for m in every)}
    table = Table(title="every arm on the frozen held-out split")
    # 80 columns (a Slurm log): a metric's name over two lines (`field` / `accuracy`), never cut to `fi…`;
    # the params label wraps rather than losing the value that tells two rows apart.
    table.add_column("#", no_wrap=True, justify="right")
    table.add_column("params", overflow="fold", max_width=28)
    table.add_column("arm", no_wrap=True)
    for col in (*columns, "tok/s"):
        table.add_column(col.replace("_", "\n"), no_wrap=True, justify="right")
    label = labeller([r.params for r in results])
    for result in results:
        if result.status != Outcome.COMPLETE:  # the reason gets one line under the table, not the metric columns
            outcome = Outcome(result.status)
            colour = "red" if outcome == Outcome.FAILED else "yellow"
            table.add_row(str(result.number), label(result.params), f"[{colour}]{outcome.words}[/{colour}]",
                          *["–"] * (len(columns) + 1))
            failures.append(f"trial {result.number} {outcome.words}: {_first_line(result.reason)} "
                            f"(why in full: {study_dir / trial_dir_name(result.number) / RESULT_FILE})")
            continue
        for arm, m in arms[result.number].items():
            cells = [_cell(m.get(c), c in fractions) for c in columns]
            table.add_row(str(result.number), label(result.params), arm, *cells, _cell(m.get("tokens_per_s")))
    console.print(table)
    for line in failures:
        console.print(line, highlight=False, soft_wrap=True)


def _first_line(reason: str | None, width: int = 100) -> str:
    line = (reason or "no reason recorded").strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def main() -> None:
    try:
        app()
    except HarnessError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()

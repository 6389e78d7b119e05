"""The stages of a trial, one file each: a stage's YAML section, its checks, what it writes and trains, and
its `run(ctx, cfg)`, registered at the bottom of its file (`harness.stages.registry`). What a trial's stages
share is their `TrialContext` (`harness.stages.context`); a trial (`harness.trial.runner.run_trial`) runs
the stages its spec enables, in the declared order."""

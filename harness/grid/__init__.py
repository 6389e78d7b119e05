"""The grid machinery: Optuna studies of trials, one trial's run, W&B tracking and the run manifest."""

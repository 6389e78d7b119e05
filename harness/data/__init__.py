"""Datasets: loading the formats users bring, the built-in task, and the frozen held-out split."""

"""Unit tests: fast, one module or a spec at a time, no training run (the first CI step)."""

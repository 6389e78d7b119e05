"""GPU tests: the CUDA paths (marked gpu: `pytest -m gpu` on a GPU machine)."""

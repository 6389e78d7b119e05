"""Grid points as short labels: only the parameters that vary across the study, e.g. `r=8 lr=0.001 4bit seed=1`.

A status table, an end-of-run table or a Slurm log line shows one trial per line, which the whole
params dict (wrapped over ten lines) does not.
"""

from __future__ import annotations

from typing import Any, Iterable

SHORT = {"learning_rate": "lr", "load_in_4bit": "4bit", "gradient_checkpointing": "gc", "batch_size": "bs",
         "max_length": "len", "target_modules": "targets", "alpha_policy": "alpha"}


def varying_keys(points: Iterable[dict[str, Any]], *, absent_counts: bool = True) -> list[str]:
    """Keys whose value differs between at least two of `points` (in first-seen order). With `absent_counts`,
    a key some points lack and others have varies too: a point without it is not one with it."""
    seen: dict[str, set[str]] = {}
    points = list(points)
    for params in points:
        for key, value in params.items():
            seen.setdefault(key, set()).add(repr(value))
    return [k for k, values in seen.items()
            if len(values) > 1 or (absent_counts and sum(k in p for p in points) not in (0, len(points)))]


def _name(key: str, keys: list[str]) -> str:
    last = key.rsplit(".", 1)[-1]
    if sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1:  # lora.r vs other.r: keep the section
        return key
    return SHORT.get(last, last)


def value_text(value: Any) -> str:
    """A parameter's value as a label shows it: floats short (`0.001`), lists comma-joined."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    return str(value)


def compact(params: dict[str, Any] | None, keys: list[str] | None = None, width: int | None = None) -> str:
    """`params` as `name=value` pairs for `keys` only (default all): booleans as `name` / `no-name`."""
    params = params or {}
    keys = [k for k in (keys if keys is not None else list(params)) if k in params]
    parts = []
    for key in keys:
        name, value = _name(key, keys), params[key]
        if isinstance(value, bool):
            parts.append(name if value else f"no-{name}")
        else:
            parts.append(f"{name}={value_text(value)}")
    text = " ".join(parts) or "–"
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def labeller(points: Iterable[dict[str, Any]]):
    """A function from one point's params to its compact label among `points`."""
    keys = varying_keys(points)
    return lambda params, width=None: compact(params, keys, width)

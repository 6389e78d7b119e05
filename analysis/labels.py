"""Arm labels as a figure shows them: only what tells its arms apart, in short forms.

An arm label names the varying params of its grid point (`tuned[lora.r=4,model.load_in_4bit=False]`,
`analysis.load.arm_label`); among the arms one figure draws, a param with one value tells nothing, and the
bracket syntax is the harness's, not the reader's. `short_labels` keeps the params that differ among the labels
given, with short keys (`r=4`): `tuned r=4`, `base`.
"""

from __future__ import annotations

import re
from typing import Iterable

from harness.labels import varying_keys

# Short keys a reader knows; any other key is shown by its last dotted part (`distill.arm` → `arm`), or whole
# when two keys of one figure would share that part.
SHORT_KEYS = {"lora.r": "r", "lora.alpha": "alpha", "train.learning_rate": "lr", "model.load_in_4bit": "4-bit",
              "train.seed": "seed"}
_LABEL = re.compile(r"^(?P<arm>[^\[\]]+)\[(?P<config>.*)\]$")
_SPLIT = re.compile(r",\s*(?=[A-Za-z_][\w.\-]*=)")  # a comma that starts the next `key=`, not one inside a value


def parse_label(label: str) -> tuple[str, dict[str, str]]:
    """`tuned[lora.r=4,model.load_in_4bit=False]` → (`tuned`, {`lora.r`: `4`, `model.load_in_4bit`: `False`})."""
    match = _LABEL.match(label)
    if not match:
        return label, {}
    pairs = (part.partition("=") for part in _SPLIT.split(match["config"]) if part)
    return match["arm"], {key: value for key, _, value in pairs}


def config_params(config: str) -> dict[str, str]:
    """A trial's config label (`lora.r=4,train.seed=0`, `analysis.load.config_label`) as {key: value}."""
    return parse_label(f"x[{config}]")[1] if config else {}


def _short_keys(keys: Iterable[str]) -> dict[str, str]:
    keys = list(dict.fromkeys(keys))
    short = {k: SHORT_KEYS.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    clashing = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashing else s) for k, s in short.items()}


def short_params(params: dict[str, str], keys: Iterable[str]) -> str:
    """`r=4, lr=0.0001`: `params` over `keys` in short forms."""
    keys = list(keys)
    short = _short_keys(keys)  # over every key of the figure: a clash anywhere keeps both keys whole
    return ", ".join(f"{short[k]}={params[k]}" for k in keys if k in params)


def short_labels(labels: Iterable[str]) -> dict[str, str]:
    """Each label → its short form among `labels`: the arm and only the params whose value differs among them.
    Where that makes two labels read alike, a param some labels lack is shown too; labels that would still
    read alike keep their full form."""
    labels = list(dict.fromkeys(labels))
    parsed = {label: parse_label(label) for label in labels}
    # First only the params whose values differ; then also those some labels lack (a main contrast's marginal
    # arm, `tuned[lora.r=32]`, is not the cell `tuned[lora.r=32,model.load_in_4bit=False]`).
    for absent_counts in (False, True):
        keys = varying_keys([p for _, p in parsed.values()], absent_counts=absent_counts)
        short = {}
        for label, (arm, params) in parsed.items():
            shown = short_params(params, keys)
            short[label] = f"{arm} {shown}" if shown else arm
        if len(set(short.values())) == len(short):
            return short
    return {label: label for label in labels}

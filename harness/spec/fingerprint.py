"""What of a spec is recorded (`spec_dump`: the manifest, W&B) and what identifies its study (`spec_fingerprint`:
whether a study may resume): neither changes when a stage, or a core field at its default, is added later."""

from __future__ import annotations

import hashlib
import json
import typing
from typing import TYPE_CHECKING, Any

from harness.stages.registry import sections

if TYPE_CHECKING:
    from harness.spec import ExperimentSpec


def spec_dump(spec: "ExperimentSpec", **kwargs: Any) -> dict[str, Any]:
    """`model_dump(mode="json")` without the sections of stages added after a study began that it does not
    use: a new stage never changes the fingerprint or manifest of a study that does not use it."""
    raw = spec.model_dump(mode="json", **kwargs)
    for name, section in type(spec).model_fields.items():  # core fields added later, at their default
        # A stage's section is `Model | None`: its fields added later count the same.
        model = next((a for a in typing.get_args(section.annotation) if hasattr(a, "model_fields")),
                     section.annotation)
        if name not in raw or not isinstance(raw[name], dict) or not hasattr(model, "model_fields"):
            continue
        for key, f in model.model_fields.items():
            if (f.json_schema_extra or {}).get("added_later") and key in raw[name] \
                    and raw[name][key] == model.model_fields[key].get_default(call_default_factory=True):
                del raw[name][key]
    for stage in sections():
        if not stage.legacy and stage.section in raw and raw[stage.section] in (None, []):
            del raw[stage.section]
    return raw


# The fingerprint scheme: bump it only for a deliberate change of what identifies a study (studies made under
# another scheme no longer resume); tests/snapshots/fingerprints.json keeps each scheme's values.
FINGERPRINT_VERSION = 1

# Keys that describe and never change a result (an endpoint's `note`): a study resumes across edits of them.
DESCRIPTIVE_KEYS = frozenset({"note"})


def _without_descriptions(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_descriptions(v) for k, v in obj.items() if k not in DESCRIPTIVE_KEYS}
    if isinstance(obj, list):
        return [_without_descriptions(v) for v in obj]
    return obj


def spec_fingerprint(spec: "ExperimentSpec") -> str:
    """What makes two studies the same experiment (tracking settings, presets, report options and
    descriptive notes aside)."""
    raw = _without_descriptions(spec_dump(spec, exclude={"tracking", "presets", "report"}))
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]

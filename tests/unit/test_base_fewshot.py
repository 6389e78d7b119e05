"""The few-shot base arm: k solved training examples as earlier chat turns (never held-out items), the
system prompt first; the report compares the final arm with it; a training split shorter than k is refused."""

from __future__ import annotations

import pytest

from harness.data.example import Example
from harness.spec import load_spec
from harness.stages.base_fewshot import FewShotSpec, with_demonstrations
from harness.stages.registry import stage_pairs
from tests.support.stages import write_spec


def _ex(i: int, system: bool = True) -> Example:
    prompt = ([{"role": "system", "content": "Answer in JSON."}] if system else []) + [{"role": "user", "content": f"q{i}"}]
    return Example(id=f"e{i}", prompt=prompt, reference=f"a{i}", cluster=f"c{i}")


def test_demonstrations_are_earlier_turns_after_the_system_prompt():
    got = with_demonstrations(_ex(9), [_ex(1), _ex(2)])
    assert [(m["role"], m["content"]) for m in got.prompt] == [
        ("system", "Answer in JSON."), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"),
        ("user", "q9")]
    assert (got.id, got.reference, got.cluster) == ("e9", "a9", "c9")  # scored and paired as the same item
    bare = with_demonstrations(_ex(9, system=False), [_ex(1, system=False)])
    assert [m["role"] for m in bare.prompt] == ["user", "assistant", "user"]


def test_the_section_takes_k_or_a_bare_number_and_adds_the_final_arm_vs_it(tmp_path):
    assert FewShotSpec.model_validate(3).k == 3 and FewShotSpec.model_validate({"k": 4}).k == 4
    spec = load_spec(write_spec(tmp_path, {"base_fewshot": 3}))
    assert spec.base_fewshot.k == 3
    assert stage_pairs(spec) == [("tuned", "base_fewshot")]
    dpo = load_spec(write_spec(tmp_path, {"base_fewshot": {"k": 2}, "dpo": {"max_pairs": 2}}, name="dpo"))
    assert stage_pairs(dpo) == [("dpo", "sft"), ("dpo", "base_fewshot")]


@pytest.mark.parametrize("k", [0, 65, -1])
def test_k_out_of_range_is_refused_naming_the_field(tmp_path, k):
    from harness.errors import SpecError

    with pytest.raises(SpecError, match="base_fewshot"):
        load_spec(write_spec(tmp_path, {"base_fewshot": {"k": k}}))

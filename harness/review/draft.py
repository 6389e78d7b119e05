"""`harness data draft`: an OpenAI-compatible model writes the outputs of a file of inputs, for a person to review.

The calls go through `harness.evaluation.endpoint.Endpoint` (the teacher's client): cached on disk, costed
from the endpoint's prices, retried with backoff. The drafted file is in the harness's own format (one
`Example.to_json()` a line), read back as it is, each pair's provenance in `meta["drafted"]`: the model, the
endpoint, when the call was made, its tokens and cost. The file is written only once every input is drafted,
so a half-drafted file is never mistaken for a dataset; a draft that stops (the endpoint failed for good)
keeps every call made so far in the cache, and the same command resumes with the rest, paying only for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.config.endpoint import EndpointSpec
from harness.data.example import Example
from harness.data.formats import Input, load_inputs
from harness.errors import DataError, HarnessError
from harness.evaluation.endpoint import Completion, Endpoint, EndpointError
from harness.results import write_jsonl

DRAFT_META = "drafted"  # the meta key `harness.data.review` reads the drafting model from
CACHE_SUFFIX = ".draft-cache"


def cache_dir(out: Path) -> Path:
    """`train.jsonl` -> `train.jsonl.draft-cache/`, beside the drafted file: what a rerun resumes from."""
    return Path(out).with_name(Path(out).name + CACHE_SUFFIX)


@dataclass
class DraftResult:
    """What a draft wrote and cost: `cost_usd` all calls at the endpoint's prices, `paid_usd` this run's only."""

    out: Path
    pairs: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    paid_usd: float
    model: str


class DraftStopped(HarnessError):
    """The endpoint failed for good part way: what was drafted is in the cache; the same command resumes."""


def _pair(item: Input, c: Completion, spec: EndpointSpec) -> Example:
    provenance: dict[str, Any] = {"model": spec.model, "url": spec.url, "time": c.created_at,
                                  "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                                  "cost_usd": c.cost_usd}
    if spec.note:
        provenance["note"] = spec.note
    return Example(id=item.id, prompt=item.prompt, reference=c.text, cluster=item.cluster, origin=item.origin,
                   meta={DRAFT_META: provenance})


def draft(inputs_path: Path, out: Path, spec: EndpointSpec, *, cache: Path | None = None,
          progress: Callable[[int, int], None] | None = None) -> DraftResult:
    """Draft an output for every input in `inputs_path` and write the pairs to `out`.

    Bad input is a `DataError` naming file:line and field; an endpoint that fails for good stops the draft
    with `DraftStopped`, naming the input it stopped at, and writes nothing (the calls made are cached)."""
    inputs_path, out = Path(inputs_path), Path(out)
    if out.resolve() == inputs_path.resolve():
        raise DataError("the drafted file would overwrite the inputs: pass another --out", where=out)
    items = load_inputs(inputs_path)
    cache = cache or cache_dir(out)
    done: list[Completion] = []
    with Endpoint(spec, cache) as endpoint:
        for item in items:
            try:
                done.append(endpoint.chat(item.prompt))
            except EndpointError as e:
                raise DraftStopped(
                    f"drafting stopped at input {item.id} ({item.origin}), {len(done)} of {len(items)} drafted: {e}\n"
                    f"The {len(done)} drafted are kept in {cache}; run the same command again to draft the other "
                    f"{len(items) - len(done)} (nothing already drafted is paid for twice).") from e
            if progress is not None:
                progress(len(done), len(items))
    empty = [item.origin for item, c in zip(items, done) if not c.text]
    if empty:
        # A reviewer could delete them, but an empty target trains the model to say nothing: refuse up front.
        listed = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise DataError(f"model {spec.model} returned an empty output for {len(empty)} input(s): {listed}; "
                        "raise max_tokens or check the endpoint (the answers are cached: delete "
                        f"{cache} to ask again)", where=inputs_path)
    write_jsonl(out, (_pair(item, c, spec).to_json() for item, c in zip(items, done)))
    return DraftResult(out=out, pairs=len(items), cached=sum(c.cached for c in done),
                       input_tokens=sum(c.input_tokens for c in done), output_tokens=sum(c.output_tokens for c in done),
                       cost_usd=sum(c.cost_usd for c in done), paid_usd=sum(c.cost_usd for c in done if not c.cached),
                       model=spec.model)

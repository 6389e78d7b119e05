"""Per-token divergence of a candidate model from its reference on the same text: did the model change, and how much.

Task accuracy over a few dozen items moves in coarse steps; the divergence of the candidate's next-token
distributions from the reference's, position by position (what llama.cpp's `perplexity --kl-divergence`
reports), tells a q8_0 from a q4_k_m on the same items. Per item, over the scored tokens of a text (the
reference answer after the item's rendered prompt, or a general text after a BOS token):

    kl            mean over positions of KL(reference ‖ candidate) = Σ_v p_ref(v)·(log p_ref(v) − log p_cand(v)),
                  in nats (0: the same distributions)
    top1_agree    share of positions whose most likely next token is the same for both models
    loglik_delta  mean per token of log p_cand(token) − log p_ref(token) over the text's own tokens

The reference's own rows are `REFERENCE_SCORES` (0 / 1 / 0), so the analysis pairs a candidate arm with
its reference arm item by item like any other score. Items weigh equally (llama.cpp pools all tokens
of its chunks instead). The score keys are declared in `harness.evaluation.metrics.divergence`.

The log-probabilities come from one forward pass per item and model, never from generation: a
transformers model (`HFLogits`, logits kept only for the scored positions) or a GGUF file in llama.cpp
(`LlamaCppLogits`, llama-cpp-python with `logits_all`), fed the same token ids. Full-vocabulary logits of
the scored positions are reduced to the three figures as soon as both models' are at hand; when the
reference ran earlier (a model no longer loaded), `ReferenceLogits` keeps its logits in files until the
candidates have run.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from harness.errors import HarnessError

KL, TOP1, LOGLIK = "kl", "top1_agree", "loglik_delta"
DIVERGENCE_SCORES = (KL, TOP1, LOGLIK)
REFERENCE_SCORES = {KL: 0.0, TOP1: 1.0, LOGLIK: 0.0}  # the reference against itself
TOKENS_FIELD = "divergence_tokens"  # how many tokens an eval row's divergence is over


@dataclass(frozen=True)
class ScoredText:
    """One item's token ids: `context` (the rendered prompt, or a BOS) conditions, `target` is scored."""

    item_id: str
    context: tuple[int, ...]
    target: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.context or not self.target:
            raise HarnessError(f"item '{self.item_id}': divergence needs a non-empty context and text to score "
                               f"(got {len(self.context)} context and {len(self.target)} scored tokens)")

    @property
    def ids(self) -> list[int]:
        return [*self.context, *self.target]


class LogitSource(Protocol):
    def logits(self, text: ScoredText) -> np.ndarray:
        """float32 (len(target), vocab): row i is the next-token logits that predict `target[i]`."""
        ...


def prompt_and_answer(item_id: str, tokenizer: Any, prompt_text: str, answer: str) -> ScoredText:
    """A held-out item's rendered prompt, tokenised as the eval tokenises it, followed by its reference answer."""
    return ScoredText(item_id, tuple(tokenizer(prompt_text, add_special_tokens=False)["input_ids"]),
                      tuple(tokenizer(answer, add_special_tokens=False)["input_ids"]))


def plain_text(item_id: str, tokenizer: Any, text: str) -> ScoredText:
    """A text scored on its own: every token after a BOS (or, for a tokenizer without one, after its first)."""
    ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    return ScoredText(item_id, (bos,), ids) if bos is not None else ScoredText(item_id, ids[:1], ids[1:])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax as _log_softmax

    return _log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def item_divergence(reference: np.ndarray, candidate: np.ndarray, target: Iterable[int]) -> dict[str, float]:
    """kl / top1_agree / loglik_delta of one item from both models' logits at its scored positions."""
    if reference.shape != candidate.shape:
        raise HarnessError(f"the reference's and the candidate's logits differ in shape ({reference.shape} vs "
                           f"{candidate.shape}): not the same vocabulary or not the same text")
    ref, cand = log_softmax(reference), log_softmax(candidate)
    p = np.exp(ref)
    with np.errstate(invalid="ignore"):
        terms = p * (ref - cand)
    # 0·log 0 is 0: a token the reference rules out adds nothing, whatever the candidate gives it.
    per_position = np.where(p > 0, terms, 0.0).sum(axis=-1)
    rows = np.arange(len(ref))
    target = np.fromiter(target, dtype=np.int64)
    return {KL: float(np.clip(per_position, 0.0, None).mean()),  # rounding can leave −1e-17 where KL is 0
            TOP1: float((ref.argmax(-1) == cand.argmax(-1)).mean()),
            LOGLIK: float((cand[rows, target] - ref[rows, target]).mean())}


def divergences(reference: LogitSource, candidate: LogitSource, texts: list[ScoredText]) -> list[dict[str, float]]:
    """Each text's divergence of `candidate` from `reference`, both models loaded at once (one forward each)."""
    return [item_divergence(reference.logits(t), candidate.logits(t), t.target) for t in texts]


class ReferenceLogits:
    """The reference's logits at every item's scored positions, kept in files (float32, as computed) while the
    reference model is gone and the candidates run one after another. `close()` removes them."""

    def __init__(self, source: LogitSource, texts: list[ScoredText], *, under: Path | None = None) -> None:
        self.texts = texts
        if under is not None:
            Path(under).mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=".divergence-", dir=under))
        try:
            for i, t in enumerate(texts):
                np.save(self._path(i), source.logits(t))
        except BaseException:
            self.close()
            raise

    def _path(self, i: int) -> Path:
        return self._dir / f"{i}.npy"

    def compare(self, candidate: LogitSource) -> list[dict[str, float]]:
        """Each text's divergence of `candidate` from the stored reference."""
        return [item_divergence(np.load(self._path(i), mmap_mode="r"), candidate.logits(t), t.target)
                for i, t in enumerate(self.texts)]

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "ReferenceLogits":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def add_divergence(rows: list[dict[str, Any]], texts: list[ScoredText], values: list[dict[str, float]]) -> None:
    """Put each item's divergence into its eval row's scores (rows and texts in the same item order)."""
    if [r["item_id"] for r in rows] != [t.item_id for t in texts] or len(values) != len(texts):
        raise HarnessError("divergence values do not line up with the eval rows (item order differs)")
    for row, text, value in zip(rows, texts, values):
        row["scores"].update(value)
        row[TOKENS_FIELD] = len(text.target)


class HFLogits:
    """A transformers (or PEFT) model: one forward pass per text, logits kept for the scored positions only."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def logits(self, text: ScoredText) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        ids = torch.tensor([text.ids], dtype=torch.long, device=device)
        n = len(text.target)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                # The last n+1 positions; the final one predicts past the text.
                out = self.model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1]
        finally:
            self.model.train(was_training)
        return out.float().cpu().numpy()


class LlamaCppLogits:
    """A GGUF file in llama.cpp (llama-cpp-python, `logits_all=True`): one eval of the token ids per text."""

    def __init__(self, gguf_path: str | Path, n_ctx: int, *, n_threads: int | None = None,
                 n_gpu_layers: int = -1) -> None:
        import llama_cpp

        self.path = Path(gguf_path)
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                                       n_gpu_layers=n_gpu_layers, logits_all=True, seed=0, verbose=False)
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise HarnessError(f"llama.cpp could not load the GGUF: {e}", where=self.path) from e
        self.n_ctx = self.llm.n_ctx()

    def logits(self, text: ScoredText) -> np.ndarray:
        ids = text.ids
        if len(ids) > self.n_ctx:
            raise HarnessError(f"item '{text.item_id}' has {len(ids)} tokens, more than the context of {self.n_ctx}",
                               where=self.path)
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[len(text.context) - 1:len(ids) - 1], dtype=np.float32)

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> "LlamaCppLogits":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def context_for(texts: list[ScoredText], multiple: int = 256) -> int:
    """A llama.cpp context that holds the longest text, rounded up."""
    return -(-(max(len(t.ids) for t in texts) + 16) // multiple) * multiple

"""One rendering of a prompt, shared by training, evaluation and every runner.

A quality comparison must measure the model, not a template difference: every runner (transformers,
llama.cpp, an HTTP endpoint serving raw completions) gets the same text rendered here.
"""

from __future__ import annotations

# Used only when a tokenizer has no chat template of its own (plain base models).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a model sees before it answers: the chat template with the generation prompt."""
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the template's end-of-turn token(s): generation must stop at the end of the answer."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return sorted(set(ids))

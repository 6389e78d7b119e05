"""The raw training loops `harness bench` measures the harness against: no Trainer, no callbacks.

    python harness/lora_reference.py run MODE DIR          # LoRA/QLoRA steps, one JSON line
    python harness/lora_reference.py dpo MODE DIR PAIRS    # DPO steps over PAIRS (JSONL), one JSON line

DIR is a model directory (weights, config, tokenizer); `harness bench` writes `random:<arch>` there
(`harness.models.materialize`). Environment: BS (sequences, or pairs for dpo), SEQ (tokens per sequence),
STEPS (timed steps), WARM (untimed steps first).

MODE: hf_lora, hf_lora_nogc (transformers + PEFT, on CUDA or the CPU); hf_liger_lora, hf_liger_lora_nogc
(Liger kernels), hf_qlora (bitsandbytes NF4), unsloth_lora, unsloth_qlora: CUDA only. `_nogc`: no
gradient checkpointing. LoRA r=16, alpha=16, no dropout, on every linear projection of the decoder.

One step is forward, backward and AdamW, on `input_ids` drawn at random with `labels = input_ids`, the
loss the model computes itself. Printed: the median step time over STEPS (wall and the process's CPU
time), tokens/s = BS*SEQ / median, model TFLOP/s as 4*N per token (N the frozen parameters), and peak
memory (CUDA: allocated; CPU: the process's resident set).

`dpo`: PAIRS holds conversational prompt/chosen/rejected rows (TRL's format); the loop renders them with
the chat template as TRL does, computes the reference log-probs once with the adapter switched off, and
times the steps of the sigmoid DPO loss (beta 0.1) over BS pairs, chosen and rejected in one batch.
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BS, SEQ = int(os.environ.get("BS", 4)), int(os.environ.get("SEQ", 2048))
STEPS, WARM = int(os.environ.get("STEPS", 10)), int(os.environ.get("WARM", 3))
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32  # as the harness loads a model on each device
MODES = ("hf_lora", "hf_lora_nogc", "hf_liger_lora", "hf_liger_lora_nogc", "hf_qlora", "unsloth_lora",
         "unsloth_qlora")


def load(mode, path):
    """The model with a fresh LoRA adapter, set up for training as MODE says."""
    if mode not in MODES:
        sys.exit(f"unknown mode {mode} (known: {', '.join(MODES)})")
    if not CUDA and mode not in ("hf_lora", "hf_lora_nogc"):
        sys.exit(f"mode {mode} needs CUDA; on the CPU: hf_lora, hf_lora_nogc")
    if mode.startswith("unsloth"):
        from unsloth import FastLanguageModel
        model, _ = FastLanguageModel.from_pretrained(path, max_seq_length=SEQ, dtype=DTYPE,
                                                     load_in_4bit=mode.endswith("qlora"))
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                                 target_modules=TARGETS, use_gradient_checkpointing="unsloth")
        FastLanguageModel.for_training(model)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    kw = dict(dtype=DTYPE, attn_implementation="sdpa", device_map={"": 0} if CUDA else None)
    if mode.endswith("qlora"):
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=DTYPE)
    if "liger" in mode:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=True)
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    if mode.endswith("nogc"):
        model.enable_input_require_grads()
    elif mode.endswith("qlora"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                            task_type="CAUSAL_LM"))


def sync():
    if CUDA:
        torch.cuda.synchronize()


def peak_gib():
    if CUDA:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # KiB on Linux


def timed_steps(model, step, tokens_per_step, load_s, mode):
    """Run WARM + STEPS steps (`step(i, opt)` returns the loss), print the JSON line."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times, losses = [], [], []
    for i in range(WARM + STEPS):
        sync()
        t, c = time.perf_counter(), time.process_time()
        loss = step(i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= WARM:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
            losses.append(loss.item())
    med, med_cpu = sorted(times)[len(times) // 2], sorted(cpu_times)[len(cpu_times) // 2]
    frozen = sum((p.numel() * 2 if p.dtype == torch.uint8 else p.numel())  # 4-bit: two per byte
                 for p in model.parameters() if not p.requires_grad)
    tok_s = tokens_per_step / med
    print(json.dumps({"mode": mode, "device": DEVICE, "bs": BS, "seq": SEQ, "steps": STEPS,
                      "median_step_s": round(med, 4), "median_step_cpu_s": round(med_cpu, 4), "tok_s": round(tok_s),
                      "model_tflops_4N": round(4 * frozen * tok_s / 1e12, 2),
                      "trainable": sum(p.numel() for p in params), "frozen": frozen, "peak_gib": round(peak_gib(), 2),
                      "load_s": round(load_s, 1), "loss_last": round(losses[-1], 3)}), flush=True)


def run(mode, path):
    t0 = time.time()
    model = load(mode, path)
    load_s = time.time() - t0
    vocab = model.config.vocab_size
    g = torch.Generator(device=DEVICE).manual_seed(0)

    def step(i):
        ids = torch.randint(3, vocab, (BS, SEQ), device=DEVICE, generator=g)
        return model(input_ids=ids, labels=ids).loss

    timed_steps(model, step, BS * SEQ, load_s, mode)


def dpo(mode, path, pairs_file, beta=0.1):
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    t0 = time.time()
    model = load(mode, path)
    load_s = time.time() - t0
    tok = AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in open(pairs_file) if line.strip()]

    def render(messages, **kw):
        return tok(tok.apply_chat_template(messages, tokenize=False, **kw), add_special_tokens=False)["input_ids"]

    pairs = []  # (prompt + chosen, prompt + rejected, prompt length), rendered as TRL renders conversations
    for r in rows:
        prompt = render(r["prompt"], add_generation_prompt=True)
        chosen, rejected = render(r["prompt"] + r["chosen"]), render(r["prompt"] + r["rejected"])
        if chosen[:len(prompt)] != prompt or rejected[:len(prompt)] != prompt:
            sys.exit("the chat template renders the prompt differently alone and before an answer")
        pairs.append((chosen[:SEQ], rejected[:SEQ], len(prompt)))
    if len(pairs) < BS * (WARM + STEPS):
        sys.exit(f"{len(pairs)} pairs for {WARM + STEPS} steps of {BS}")

    def batch(i):
        """Chosen then rejected, right-padded; the labels are the answers' tokens."""
        part = pairs[i * BS:(i + 1) * BS]
        seqs = [c for c, _, _ in part] + [r for _, r, _ in part]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        labels = torch.full((len(seqs), n), -100, dtype=torch.long)
        for row, (s, (_, _, p)) in enumerate(zip(seqs, part + part)):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
            labels[row, p:len(s)] = ids[row, p:len(s)]
        return ids.to(DEVICE), mask.to(DEVICE), labels.to(DEVICE)

    def logps(ids, mask, labels):
        """Each sequence's summed log-probability of its answer tokens."""
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        labels = labels[:, 1:]
        per_token = torch.gather(F.log_softmax(logits, -1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (per_token * (labels != -100)).sum(-1)

    batches = [batch(i) for i in range(WARM + STEPS)]
    with torch.no_grad(), model.disable_adapter():  # the reference policy, computed once
        reference = [logps(*b).chunk(2) for b in batches]

    def step(i):
        chosen, rejected = logps(*batches[i]).chunk(2)
        ref_chosen, ref_rejected = reference[i]
        return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()

    tokens = sum(int(b[1].sum()) for b in batches[WARM:]) / STEPS  # non-padding tokens per step
    timed_steps(model, step, tokens, load_s, f"dpo_{mode}")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("run", "dpo"):
        sys.exit(__doc__)
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        dpo(sys.argv[2], sys.argv[3], sys.argv[4])

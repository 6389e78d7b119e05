"""harness: fine-tune small open LMs with LoRA/QLoRA and prove, with statistics, what each change did."""

__version__ = "0.1.0"

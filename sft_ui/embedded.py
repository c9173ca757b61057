"""The embedded default model: a tiny random-init Llama and a byte-level BPE tokenizer, built offline.

Nothing here downloads anything. The build is deterministic (fixed corpus, fixed seed) and cached under
the workspace; a missing or partial cache is rebuilt. Worker-side only: imports transformers lazily.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_VERSION = "v1"
VOCAB_SIZE = 2000
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# ChatML, with generation marks around assistant turns so `assistant_only_loss=True` works.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _corpus() -> list[str]:
    """Training text for the tokenizer: the shipped samples, in file order (deterministic)."""
    from .data import SAMPLES_DIR

    texts: list[str] = []
    with (SAMPLES_DIR / "chat.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            for turn in json.loads(line)["messages"]:
                texts.append(turn["content"])
    for record in json.loads((SAMPLES_DIR / "alpaca.json").read_text(encoding="utf-8")):
        texts.append(" ".join(record[k] for k in ("instruction", "input", "output") if record.get(k)))
    texts.append("system user assistant " + " ".join("abcdefghijklmnopqrstuvwxyz0123456789"))
    return texts


def _build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", bos_token=None,
        unk_token=None, model_max_length=2048,
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>"]})
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def _build_model(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=64,
    )
    model.save_pretrained(out)
    (out / "README.md").write_text(
        "# sft_ui embedded tiny-llama\n\nA random-init 2-layer Llama (about 260k parameters) with a byte-level "
        "BPE tokenizer and a ChatML template, built offline by `sft_ui.embedded` for demos and tests. "
        "Its weights are random: after training it learns the sample data's patterns, not language.\n",
        encoding="utf-8",
    )


def is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def ensure_embedded_model(models_dir: Path) -> Path:
    """The cached embedded model folder, built first if missing or incomplete (atomic, race-safe)."""
    target = models_dir / f"embedded-tiny-llama-{EMBEDDED_VERSION}"
    if is_complete(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    log.info("building the embedded tiny model in %s", target)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=models_dir))
    try:
        _build_tokenizer(tmp)
        _build_model(tmp)
        for child in tmp.iterdir():
            os.chmod(child, 0o644)  # transformers writes safetensors 0600; the cache is shared read-only
        if target.exists() and not is_complete(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not is_complete(target):  # someone else won the race with a good build: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

"""Make a small random Llama model in Hugging Face format, without any model hub.

The weights are random, so the text is gibberish, but every path through vLLM (tokenizer,
chat template, engine, sampling, weight loading) is the real one. Tests and the demo model use
it; ``nightshift make-model`` writes one for benchmarks.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
_CORPUS = (
    "the night is long and the workers are patient. a batch of prompts waits in the queue. "
    "def add(a, b): return a + b. import os, sys. tests pass; tests fail. "
    "spaced repetition helps memory. the quick brown fox jumps over the lazy dog. "
    "0123456789 {}[]()<>=+-*/.,;:!?'\" \n\t"
)


@dataclass(frozen=True)
class TinyModelShape:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden / heads; the CPU kernels need 64 or more
    intermediate_size: int = 256
    vocab_size: int = 512
    max_position_embeddings: int = 1024


def make_tiny_model(target: Path, shape: TinyModelShape = TinyModelShape(), seed: int = 0) -> Path:
    """Write config, safetensors weights and tokenizer into ``target`` (atomically) and return it."""
    if (target / "config.json").is_file():
        return target
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab_size,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(staging)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(staging, safe_serialization=True)
    (staging / "nightshift-tiny-model.json").write_text(json.dumps(shape.__dict__))
    try:
        os.rename(staging, target)
    except OSError:  # another process made it first; theirs is as good as ours
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target

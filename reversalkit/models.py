"""Models and tokenizers: the tiny Llama of the embedded default, its word-level tokenizer, and
loading/saving of real Hugging Face checkpoints.

The embedded default trains a ~1M-parameter `LlamaForCausalLM` from scratch, so it needs a
tokenizer that makes arithmetic easy to learn: every integer 0..999 is one token, `<<`, `>>` and
`####` are single tokens, words are whole tokens. Real models come from a hub id or a local
directory through `transformers`; `save_model` writes safetensors that `load_model` reads back.

    tok = build_word_tokenizer(texts)
    model = tiny_llama(len(tok), seed=0)
    save_model(model, tok, "run/m1"); model = load_model("run/m1", device="cpu", dtype="float32")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from reversalkit.device import resolve_dtype

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order

# One pre-token per match. Integers of up to three digits without a leading zero are one token;
# any other digit run (1234, 007) falls back to one token per digit, which the decoder glues back.
_NUMBER = r"(?<!\d)(?:0|[1-9]\d{0,%d})(?!\d)"
_TOKEN_PATTERN = r"####|<<|>>|\n|[A-Za-z]+(?:['-][A-Za-z]+)*|%s|\d|[^\sA-Za-z\d]"

# Decoding joins tokens with single spaces (the synthetic task writes every token space-separated,
# "Mia has 12 pens ."), then removes the spaces such text does not have. Each rule is (regex,
# replacement); they run in order on the whole string (the Fuse step makes it one string first).
# Text with punctuation attached ("pens.") decodes with a space before it ("pens ."): the words,
# numbers, annotations and `#### answer` are unchanged, which is all that answer checking reads.
_DECODE_RULES = (
    (r" (?=[^<>\n]*>>)", ""),  # inside an annotation <<3*7=21>>, and before its closing >>
    (r"(?<=>>) (?=\d)", ""),  # the result that follows an annotation: >>21
    (r" (?=:)", ""),  # prompt markers: "Question:", "Answer:"
    (r" ?\n ?", "\n"),  # newlines carry no spaces around them
    (r"(?<=\d) (?=\d)", ""),  # digit-split numbers (>999, leading zeros) glue back together
)


def _number_vocab(max_number: int) -> list[str]:
    digits = len(str(max_number))
    if max_number < 9 or max_number != 10**digits - 1:
        raise ValueError(
            f"max_number must be of the form 10**k - 1 (9, 99, 999, ...) so that every number of up to "
            f"k digits is one token; got {max_number}"
        )
    return [str(n) for n in range(max_number + 1)]


def word_pre_tokenizer(max_number: int = 999) -> pre_tokenizers.PreTokenizer:
    """Whitespace is dropped (newlines kept as tokens); words, numbers, punctuation split apart."""
    digits = len(str(max_number))
    pattern = _TOKEN_PATTERN % (_NUMBER % (digits - 1))
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t\r\f\v]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        ]
    )


def word_decoder() -> decoders.Decoder:
    # WordPiece with prefix " " puts a space before every token but the first: no token starts with
    # a space, since pre-tokenization drops whitespace. Fuse makes one string for the rules.
    steps = [decoders.WordPiece(prefix=" ", cleanup=False), decoders.Fuse()]
    steps += [decoders.Replace(Regex(pattern), repl) for pattern, repl in _DECODE_RULES]
    return decoders.Sequence(steps)


def build_word_tokenizer(
    texts: Iterable[str], *, max_number: int = 999, extra_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every pre-token seen in `texts`.

    Ids: the four special tokens (pad, bos, eos, unk) first, then the integers 0..max_number, then
    `extra_tokens`, then every other pre-token of `texts` in sorted order, so the result depends
    only on the set of pre-tokens (deterministic, independent of text order). Case is kept: the
    decoder should give back the task's texts exactly, and lowercasing would lose that for
    sentence-initial words at the cost of only a few dozen extra tokens. Encoding prepends bos;
    `decode(..., skip_special_tokens=True)` gives back the synthetic task's texts exactly (tokens
    space-separated except inside `<<...>>`, after `>>`, before `:` and around newlines; see
    `_DECODE_RULES`).
    Unseen words map to unk. Padding is on the left, as batched generation needs.
    """
    pre = word_pre_tokenizer(max_number)
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *_number_vocab(max_number), *extra_tokens):
        vocab.setdefault(tok, len(vocab))
    seen: set[str] = set()
    for text in texts:
        seen.update(piece for piece, _ in pre.pre_tokenize_str(text))
    for tok in sorted(seen - vocab.keys()):
        vocab[tok] = len(vocab)

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = word_decoder()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised fp32 Llama; the same seed gives the same weights.

    `intermediate_size` defaults to 4 * hidden_size (hidden 128, 4 layers, ~1.1k vocab: 1.12M
    parameters). Special-token ids follow `build_word_tokenizer` (pad 0, bos 1, eos 2). The global
    torch RNG is forked, so building a model leaves the caller's random state untouched.
    """
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must divide by num_heads ({num_heads}) and num_heads by "
            f"num_kv_heads ({num_kv_heads})"
        )
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(EOS),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def num_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _offline_hint(spec: str, what: str, exc: Exception) -> OSError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    where = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "it could not be fetched"
    cause = " ".join(str(exc).split())  # one line: hub errors span several
    cause = cause if len(cause) <= 160 else cause[:157] + "..."
    return OSError(
        f"cannot load {what} {spec!r}: it is not a local directory and {where} ({cause}). "
        f"Pass the path of a local checkpoint directory (config.json + *.safetensors + tokenizer files), "
        f"or download it first on a machine with network access: `huggingface-cli download {spec}` "
        f"and copy the cache (HF_HOME) here."
    )


@contextlib.contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off inside the
    block when not `enabled`; their switch is process-wide, so it is restored on the way out."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    turn_off = not enabled and hf_logging.is_progress_bar_enabled()
    if turn_off:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if turn_off:
            hf_logging.enable_progress_bar()


def load_model(spec: str | Path, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = "auto", progress: bool = True) -> PreTrainedModel:
    """A causal LM from a local directory or a hub id, on `device` in `dtype`, in eval mode;
    `progress=False` silences transformers' loading bar."""
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(spec).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} exists but holds no config.json; is it a model directory?")
    source = str(path) if path.exists() else str(spec)
    try:
        with hf_progress_bars(progress):
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        if path.exists():
            raise
        raise _offline_hint(str(spec), "model", exc) from exc
    return model.to(device).eval()


def load_tokenizer(spec: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a model (local directory or hub id); pad falls back to eos."""
    path = Path(spec).expanduser()
    source = str(path) if path.exists() else str(spec)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        if path.exists():
            raise
        raise _offline_hint(str(spec), "tokenizer", exc) from exc
    if tok.pad_token is None:  # Llama/Mistral ship none; padding is always masked out anyway
        tok.pad_token = tok.eos_token
    return tok


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path, *,
               progress: bool = True) -> Path:
    """Write config, safetensors weights and tokenizer files into `path` (created if needed);
    `progress=False` silences transformers' writing bar.

    Not atomic by itself: callers that need atomicity write into a temporary directory and rename.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with hf_progress_bars(progress):
        model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path

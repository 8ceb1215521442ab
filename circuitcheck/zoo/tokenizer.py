"""The zoo's word-level tokenizer: 64 tokens, one per whitespace-separated word.

Ids: ``<bos>`` 0, ``<unk>`` 1, ``<pad>`` 2, then ``a``..``z`` (3-28), ``0``..``9``
(29-38), then 25 short English words (39-63). Encoding prepends ``<bos>`` once;
decoding joins words with single spaces. The vocabulary is a constant, so the
tokenizer files are the same on every build.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("<bos>", "<unk>", "<pad>")
WORDS = (
    "the", "cat", "dog", "sat", "on", "mat", "ran", "to", "and", "is",
    "in", "it", "of", "big", "red", "sun", "hat", "box", "fox", "saw",
    "was", "he", "she", "we", "up",
)

VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(string.ascii_lowercase) + tuple(string.digits) + WORDS
VOCAB_SIZE = 64
BOS_ID = 0

assert len(VOCAB) == VOCAB_SIZE, len(VOCAB)
assert len(set(VOCAB)) == VOCAB_SIZE


def build_tokenizer(vocab: tuple[str, ...] = VOCAB):
    """An in-memory ``PreTrainedTokenizerFast`` (save it, then load it from disk for TransformerLens).

    ``vocab``: the tokens in id order, the special tokens first (the planted
    models use a prefix of :data:`VOCAB`).
    """
    assert tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS, vocab[:3]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocab)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    # WordPiece decoding with a prefix no token has joins tokens with single spaces.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<bos>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def save_tokenizer(directory: str | Path, vocab: tuple[str, ...] = VOCAB) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (only those) into ``directory``."""
    import tempfile

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            source = Path(tmp) / name
            target = directory / name
            target.write_bytes(source.read_bytes())
            written.append(target)
    return written


def load_tokenizer(directory: str | Path):
    """The tokenizer saved in ``directory`` (TransformerLens needs one loaded from disk)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))

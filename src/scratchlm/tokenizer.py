"""Tokenizers: byte-level BPE (GPT-2 style, trained with Hugging Face `tokenizers`) and characters.

Both kinds are stored as one Hugging Face `tokenizer.json`, so transformers and llama.cpp can load the
BPE one later, and both share one code path here. The special tokens are one list (`SPECIAL_TOKENS`)
with fixed ids at the start of the vocabulary.

User text is always encoded as plain text: typing "<|endoftext|>" yields the pieces "<", "|", ...,
never the control token (`encode_special_tokens = True` on the wrapped tokenizer). Control tokens
enter a sequence only by id, through the chat template or the data pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from scratchlm.errors import ScratchLMError
from scratchlm.io_utils import atomic_write_text

# One list, in id order. pad/bos/eos/unk are the classic four; the rest are the chat role markers
# used by the chat template (system, user and assistant turns, each closed by <|end|>).
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<|unk|>"
SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_OF_TURN_TOKEN = "<|end|>"
SPECIAL_TOKENS: list[str] = [
    PAD_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    UNK_TOKEN,
    SYSTEM_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    END_OF_TURN_TOKEN,
]
TOKENIZER_KINDS = ("bpe", "char")
# The smallest vocabulary that leaves room for the special tokens and the 256 byte symbols of BPE.
MIN_BPE_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


def unicode_problem(text: str) -> str | None:
    """None for valid Unicode; otherwise where the first invalid code point sits, in words.

    Python strings may hold lone surrogates (U+D800..U+DFFF), which no UTF-8 encoder accepts. They
    arrive two ways: undecodable bytes on argv, stdin or in file names (Python's surrogateescape maps
    byte 0xXY to U+DCXY, so we can name the byte), and "\\ud800"-style escapes in JSON.
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02x} at character {error.start} is not valid UTF-8"
        return f"a lone surrogate U+{code:04X} at character {error.start} is not valid Unicode"
    return None


def require_unicode(text: str, source: str) -> str:
    """`text` unchanged, or a ScratchLMError naming `source` (e.g. "--prompt") and the bad spot."""
    problem = unicode_problem(text)
    if problem is not None:
        raise ScratchLMError(f"{source}: {problem}; pass valid UTF-8 text")
    return text


class Tokenizer:
    """A trained tokenizer: encode plain text to ids, decode ids to text, save/load tokenizer.json."""

    def __init__(self, backend: HFTokenizer, kind: str) -> None:
        if kind not in TOKENIZER_KINDS:
            raise ScratchLMError(f"unknown tokenizer kind {kind!r}; use one of {TOKENIZER_KINDS}")
        self.backend = backend
        self.kind = kind
        # Special spellings in text stay text: see the module docstring.
        self.backend.encode_special_tokens = True
        ids = [backend.token_to_id(token) for token in SPECIAL_TOKENS]
        if ids != list(range(len(SPECIAL_TOKENS))):
            raise ScratchLMError(
                "tokenizer.json does not hold scratchlm's special tokens at ids 0.."
                f"{len(SPECIAL_TOKENS) - 1} ({', '.join(SPECIAL_TOKENS)}); train it with "
                "`scratchlm tokenizer train` or pass --tokenizer bpe|char to train a new one"
            )
        self.pad_id = SPECIAL_TOKENS.index(PAD_TOKEN)
        self.bos_id = SPECIAL_TOKENS.index(BOS_TOKEN)
        self.eos_id = SPECIAL_TOKENS.index(EOS_TOKEN)
        self.unk_id = SPECIAL_TOKENS.index(UNK_TOKEN)
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        # Which chat template renders conversations for the model this tokenizer belongs to: set
        # from the checkpoint when one is loaded (`checkpoint.chat_template_version`); None means
        # the current one. It travels with the tokenizer so that every `chat_template.render`
        # call uses the model's own format without the version being passed around.
        self.chat_template_version: int | None = None

    # --- encoding -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Plain text to ids; never emits a special token and adds no bos/eos."""
        try:
            return list(self.backend.encode(text, add_special_tokens=False).ids)
        except TypeError:
            # The Rust side takes only valid Unicode; entry points name their source first, this
            # is the backstop that keeps a lone surrogate from ever becoming a traceback.
            require_unicode(text, "the text")
            raise

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        try:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        except TypeError:
            for index, text in enumerate(texts):
                require_unicode(text, f"text {index}")
            raise
        return [list(encoding.ids) for encoding in encodings]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special))

    def special_id(self, token: str) -> int:
        if token not in SPECIAL_TOKENS:
            raise ScratchLMError(f"{token!r} is not a special token; they are {SPECIAL_TOKENS}")
        return SPECIAL_TOKENS.index(token)

    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < len(SPECIAL_TOKENS)

    def id_to_piece(self, token_id: int) -> str:
        """The token's surface form, with BPE's byte symbols turned back into readable text."""
        piece = self.backend.id_to_token(token_id)
        if piece is None:
            raise ScratchLMError(
                f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )
        if self.kind == "bpe" and not self.is_special(token_id):
            raw = bytes(_BYTE_DECODER.get(symbol, 0) for symbol in piece)
            return raw.decode("utf-8", errors="backslashreplace")
        return str(piece)

    # --- persistence ----------------------------------------------------------------------------
    def to_json(self) -> str:
        return str(self.backend.to_str())

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        backend = HFTokenizer.from_str(text)
        return cls(backend, _detect_kind(json.loads(text)))

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise ScratchLMError(
                f"no tokenizer at {file}; pass the tokenizer.json written by `scratchlm tokenizer "
                "train` (or a checkpoint directory that holds one)"
            )
        try:
            return cls.from_json(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, Exception) as error:
            if isinstance(error, ScratchLMError):
                raise
            raise ScratchLMError(
                f"{file} is not a valid tokenizer.json ({error}); retrain it with `scratchlm tokenizer train`"
            ) from None

    def fingerprint(self) -> str:
        """A stable hash of the tokenizer's content, used as a cache key by the data pipeline."""
        canonical = json.dumps(json.loads(self.to_json()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _detect_kind(tokenizer_json: dict[str, object]) -> str:
    # Character tokenizers have no pre-tokenizer and no merges; BPE ones use the ByteLevel pre-tokenizer.
    pre_tokenizer = tokenizer_json.get("pre_tokenizer")
    return "bpe" if pre_tokenizer is not None else "char"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in symbols), strict=True))


_BYTE_DECODER: dict[str, int] = {symbol: byte for byte, symbol in _bytes_to_unicode().items()}


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE tokenizer (GPT-2 pre-tokenization regex, no prefix space)."""
    if vocab_size < MIN_BPE_VOCAB_SIZE:
        raise ScratchLMError(
            f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least "
            f"{MIN_BPE_VOCAB_SIZE} ({len(SPECIAL_TOKENS)} special tokens + 256 bytes); use 512 or more"
        )
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_non_empty(texts), trainer=trainer)
    return Tokenizer(backend, "bpe")


def train_char(texts: Iterable[str]) -> Tokenizer:
    """A character tokenizer: one id per distinct character seen, in code-point order.

    Stored as a BPE model with no merges (each character its own token, unseen ones map to <|unk|>)
    and a Fuse decoder, so it is a valid tokenizer.json like the BPE kind.
    """
    characters: set[str] = set()
    for text in texts:
        characters.update(text)
    if not characters:
        raise ScratchLMError(
            "cannot train a character tokenizer on empty text; pass a non-empty corpus"
        )
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for character in sorted(characters):
        vocab.setdefault(character, len(vocab))
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    return Tokenizer(backend, "char")


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    yielded = False
    for text in texts:
        if text:
            yielded = True
            yield text
    if not yielded:
        raise ScratchLMError("cannot train a tokenizer on empty text; pass a non-empty corpus")

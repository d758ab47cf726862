"""selfserve's deterministic tokenizer rule and chained block hashing.

A real BPE (tiktoken's o200k) needs its vocabulary files, which cannot be downloaded here,
so the twin, the bench and the gateway all count and hash tokens with one documented rule
that behaves like a GPT-style pre-tokenizer:

- a token is ``" ?[letters/digits]{1,4}"`` (an optional leading space plus up to 4
  letters/digits, so a long word is split every 4 characters), or ``" ?<one punctuation
  char>"``, or ``" ?_"``, or a run of whitespace (a whitespace run gives its last space to
  the following word, as GPT-2's ``\\s+(?!\\S)`` does);
- a token's id is the CRC-32 of its UTF-8 bytes (stable across processes and platforms,
  unlike Python's salted ``hash``).

English prose comes out at roughly 1.2-1.4 tokens per word, close to real BPEs, and the
rule is *concatenation-stable* for text built of ``" wxyz"`` words: tokenizing two blocks
joined is the same as joining their tokens. That is what lets `selfserve bench` write a
text block per trace block hash and have the twin's prefix cache see the same sharing.

Block hashes are chained (vLLM-style): ``h[i] = blake2b(h[i-1] || ids of block i)`` cut
to 63 bits, so equal ``h[i]`` means the first ``(i + 1) * block_size`` tokens are equal.
Only full blocks are hashed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from array import array
from collections.abc import Sequence

TOKEN_PATTERN = re.compile(r" ?[^\W_]{1,4}| ?[^\w\s]| ?_|\s+(?!\S)|\s+")
# The same rule spelled out for pure-ASCII text, where explicit classes match about 30%
# faster than Unicode-aware ones. Unicode `\s` also counts \x1c-\x1f as whitespace, so
# they are listed; the property test checks both patterns agree on every ASCII string.
_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f ]"
_NOT_WS = r"[^\t\n\x0b\x0c\r\x1c-\x1f ]"
ASCII_TOKEN_PATTERN = re.compile(
    rf" ?[a-zA-Z0-9]{{1,4}}| ?[^a-zA-Z0-9_\t\n\x0b\x0c\r\x1c-\x1f ]| ?_|{_WS}+(?!{_NOT_WS})|{_WS}+"
)
HASH_MASK_63 = (1 << 63) - 1
# The chain starts from a fixed seed so the first block's hash is not just a hash of ids.
_ROOT_HASH = 0x5E1F5E12F


def _pattern(text: str) -> re.Pattern:
    return ASCII_TOKEN_PATTERN if text.isascii() else TOKEN_PATTERN


def split_tokens(text: str) -> list[str]:
    """The token strings of `text` under selfserve's rule (see the module docstring)."""
    return _pattern(text).findall(text)


def tokenize(text: str) -> list[int]:
    """Token ids of `text`: CRC-32 of each token string's UTF-8 bytes."""
    crc = zlib.crc32
    return [crc(piece.encode()) for piece in _pattern(text).findall(text)]


def count_tokens(text: str) -> int:
    """Number of tokens in `text` (same rule as `tokenize`, without computing ids)."""
    return len(_pattern(text).findall(text))


def block_hashes(
    token_ids: Sequence[int], block_size: int, *, parent_hash: int | None = None
) -> tuple[int, ...]:
    """Chained 63-bit hashes of the full `block_size`-token blocks of `token_ids`.

    `parent_hash` continues a chain (e.g. after a cached prefix); None starts a new one.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    previous = _ROOT_HASH if parent_hash is None else parent_hash
    hashes: list[int] = []
    full = len(token_ids) - len(token_ids) % block_size
    for start in range(0, full, block_size):
        ids = array("I", token_ids[start : start + block_size])
        digest = hashlib.blake2b(previous.to_bytes(8, "little"), digest_size=8)
        digest.update(ids.tobytes())
        previous = int.from_bytes(digest.digest(), "little") & HASH_MASK_63
        hashes.append(previous)
    return tuple(hashes)


def content_hash(data: bytes | str) -> int:
    """A 63-bit hash of media content (image bytes, audio bytes, a URL)."""
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") & HASH_MASK_63


# The chat template the twin renders messages with (the gateway and bench use it to count
# chat prompts): each message is CHAT_ROLE_OPEN + content + CHAT_MESSAGE_END, and the
# prompt ends with CHAT_GENERATION_PROMPT. Pieces are tokenized separately.
CHAT_ROLE_OPEN = "<|{role}|>\n"
CHAT_MESSAGE_END = "\n"
CHAT_GENERATION_PROMPT = "<|assistant|>\n"


def chat_overhead_tokens(roles: Sequence[str]) -> int:
    """Template tokens added around chat messages with these roles (content excluded)."""
    per_message = sum(count_tokens(CHAT_ROLE_OPEN.format(role=role)) for role in roles)
    return (
        per_message
        + len(roles) * count_tokens(CHAT_MESSAGE_END)
        + count_tokens(CHAT_GENERATION_PROMPT)
    )

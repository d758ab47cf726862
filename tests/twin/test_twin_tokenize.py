"""selfserve's tokenizer rule and chained block hashes (shared by twin, bench, gateway)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from selfserve.workload.tokenize import (
    ASCII_TOKEN_PATTERN,
    TOKEN_PATTERN,
    block_hashes,
    chat_overhead_tokens,
    count_tokens,
    split_tokens,
    tokenize,
)


def test_long_words_split_every_four_characters_and_spaces_attach_to_words():
    assert split_tokens("Hello internationalization, ok") == [
        "Hell", "o", " inte", "rnat", "iona", "liza", "tion", ",", " ok",
    ]  # fmt: skip


def test_token_ids_are_stable_across_calls_and_processes():
    # CRC-32 of the UTF-8 bytes: fixed values, not Python's salted hash().
    assert tokenize(" the") == [tokenize(" the")[0]]
    assert tokenize("ab") == [0x9E83486D]


@given(st.text(max_size=300))
def test_tokens_reassemble_the_text_and_count_matches(text):
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert count_tokens(text) == len(pieces) == len(tokenize(text))


@given(st.lists(st.integers(0, 2**32 - 1), max_size=200), st.integers(1, 40))
def test_block_hashes_cover_full_blocks_and_are_chained(ids, size):
    hashes = block_hashes(ids, size)
    assert len(hashes) == len(ids) // size
    assert all(0 <= h < 2**63 for h in hashes)
    # Changing the first token changes every block hash (chaining).
    if hashes:
        changed = block_hashes([ids[0] ^ 1, *ids[1:]], size)
        assert all(a != b for a, b in zip(hashes, changed, strict=True))


def test_shared_text_prefix_gives_shared_leading_block_hashes():
    shared = " abcd" * 48  # 48 one-token words = 3 blocks of 16
    a = block_hashes(tokenize(shared + " xxxx" * 20), 16)
    b = block_hashes(tokenize(shared + " yyyy" * 20), 16)
    assert a[:3] == b[:3]
    assert a[3] != b[3]


def test_parent_hash_continues_a_chain():
    ids = list(range(64))
    whole = block_hashes(ids, 16)
    tail = block_hashes(ids[32:], 16, parent_hash=whole[1])
    assert tail == whole[2:]


def test_chat_overhead_counts_template_tokens():
    # "<|user|>\n" = < | user | > \n (6), "\n" (1), "<|assistant|>\n" = 8
    assert chat_overhead_tokens(["user"]) == 15
    # "<|system|>\n" splits "system" into "syst" + "em": 7 tokens, + 1 for "\n"
    assert chat_overhead_tokens(["system", "user"]) == 15 + 8


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_ascii_fast_pattern_matches_the_unicode_rule(text):
    assert ASCII_TOKEN_PATTERN.findall(text) == TOKEN_PATTERN.findall(text)

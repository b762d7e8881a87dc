"""Envelopes are gzipped with a window sized to them: the body is byte for byte what zlib's full window
gives, and any gzip reader gets the envelope back."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bridge.transport import gzip_compress

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=12), children, max_size=8)
    ),
    max_leaves=400,
)


def full_window(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


@settings(max_examples=150, deadline=None)
@given(payload=json_like, level=st.integers(min_value=1, max_value=9), copies=st.integers(1, 40))
def test_any_envelope_body_is_what_the_full_window_gives(payload: object, level: int, copies: int) -> None:
    data = json.dumps(payload).encode() * copies
    body = gzip_compress(data, level)
    assert gzip.decompress(body) == data
    assert zlib.decompress(body, 31) == data
    assert body == full_window(data, level)


@given(data=st.binary(max_size=70_000), level=st.integers(min_value=1, max_value=9))
@settings(max_examples=60, deadline=None)
def test_bytes_of_any_length_round_trip(data: bytes, level: int) -> None:
    body = gzip_compress(data, level)
    assert gzip.decompress(body) == data
    assert body == full_window(data, level)


@pytest.mark.parametrize(
    "size", [1, 261, 262, 263, 250, 511, 512, 773, 774, 3834, 3835, 4096, 32506, 32507, 70_000]
)
@pytest.mark.parametrize("level", [1, 6, 9])
def test_data_repeating_from_far_back_at_every_window_edge(size: int, level: int) -> None:
    # a block, then the same block again: the matches reach back as far as the data is long
    block = random.Random(size).randbytes((size + 1) // 2)
    data = (block + block)[:size]
    assert gzip_compress(data, level) == full_window(data, level)

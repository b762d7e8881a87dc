"""Envelopes are gzipped with a window sized to them: any gzip reader gets the same bytes back, and the
body is about as small as with zlib's full window and hash tables."""

from __future__ import annotations

import gzip
import json
import zlib

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
def test_any_envelope_body_comes_back_whole_and_about_as_small(
    payload: object, level: int, copies: int
) -> None:
    data = json.dumps(payload).encode() * copies
    body = gzip_compress(data, level)
    assert gzip.decompress(body) == data
    assert zlib.decompress(body, 31) == data
    assert len(body) <= len(full_window(data, level)) * 1.02 + 8


@given(data=st.binary(max_size=70_000), level=st.integers(min_value=1, max_value=9))
@settings(max_examples=60, deadline=None)
def test_bytes_of_any_length_round_trip(data: bytes, level: int) -> None:
    assert gzip.decompress(gzip_compress(data, level)) == data

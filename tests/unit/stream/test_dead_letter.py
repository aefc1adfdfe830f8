"""A dead letter fits the producer's limit whatever the event: cut bytes, original size and sha256 kept."""

from __future__ import annotations

import base64
import hashlib
from collections import namedtuple

import orjson
import pytest

from online.stream.outputs import MAX_DEAD_LETTER_BYTES, MAX_KEY_BYTES, DeadLetter

pytestmark = pytest.mark.unit

Message = namedtuple("Message", "topic partition offset timestamp key value")


def letter(value: bytes | None, key: bytes | None = b'{"id":1}') -> DeadLetter:
    return DeadLetter.of(
        "uc", "bad_json", "not JSON", Message("migrate.events.uc", 2, 41, 1_700_000_000_000, key, value)
    )


@pytest.mark.parametrize(
    "value",
    [
        b"\x01" * 900_000,  # valid UTF-8 that JSON escapes six-fold (\u0001)
        b'"' * 900_000,  # escaped two-fold
        b"\xff" * 900_000,  # not UTF-8: base64, four thirds
        "é".encode() * 600_000,  # multi-byte characters: a cut may split one
    ],
)
def test_an_oversized_value_is_cut_to_fit_and_keeps_its_size_and_sha256(value: bytes) -> None:
    made = letter(value)
    assert len(made.to_json()) <= MAX_DEAD_LETTER_BYTES
    assert made.value_truncated and made.value_size == len(value)
    assert made.value_sha256 == hashlib.sha256(value).hexdigest()
    kept = base64.b64decode(made.value or "") if made.value_base64 else (made.value or "").encode()
    assert 0 < len(kept) < len(value) and value.startswith(kept)  # the first bytes, as they came
    headers = dict(made.headers())
    assert headers["migrate-value-size"] == str(len(value)).encode() and headers["migrate-value-truncated"] == b"1"


def test_a_small_value_is_kept_whole() -> None:
    made = letter(b"{not json")
    assert (made.value, made.value_base64, made.value_truncated, made.value_size) == ("{not json", False, False, 9)
    assert orjson.loads(made.to_json())["value_sha256"] == hashlib.sha256(b"{not json").hexdigest()
    assert made.message_key() == b'{"id":1}'


def test_an_oversized_key_is_cut_and_the_dead_letter_keyed_by_its_hash() -> None:
    made = letter(b"{}", key=b"k" * 100_000)
    assert made.key_truncated and made.key is not None and len(made.key) == MAX_KEY_BYTES
    key = made.message_key()
    assert key is not None and key.startswith(b"sha256:") and len(key) < 100


def test_a_tombstone_has_no_value_and_no_hash() -> None:
    made = letter(None)
    assert (made.value, made.value_size, made.value_sha256, made.value_truncated) == (None, None, None, False)
    assert dict(made.headers()) == {"migrate-reason": b"bad_json"}

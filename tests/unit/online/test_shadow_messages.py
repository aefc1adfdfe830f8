"""group_messages: the shadow log's records as Kafka messages, several records of one partition in each.

Checked against kafka-python's own DefaultPartitioner (each record in the partition it would pick for the record's
key, as when every record was a message of its own), and against the input itself: nothing lost, repeated or
reordered within a partition, every cap held, and no message cut short while the next record would have fit.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_stubs import library_partition

from online.kafka import KeyHashPartitioner
from online.shadow.log import Message, ShadowLogger, group_messages


def _records_of(message: Message) -> list[bytes]:
    return message.value.split(b"\n")


_values = st.binary(min_size=1, max_size=300).map(lambda value: value.replace(b"\n", b" "))


@settings(max_examples=400, deadline=None)
@given(
    records=st.lists(st.tuples(st.sampled_from([b"", b"a", b"k1", b'{"id":7}', b"\x00\xff"]), _values), max_size=60),
    partitions=st.sets(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
    records_per_message=st.integers(min_value=1, max_value=8),
    message_bytes=st.integers(min_value=1, max_value=1_500),
)
def test_messages_keep_every_record_in_its_partition_and_order_within_the_caps(
    records: list[tuple[bytes, bytes]], partitions: set[int], records_per_message: int, message_bytes: int
) -> None:
    messages = group_messages(
        records,
        sorted(partitions),
        KeyHashPartitioner(),
        records_per_message=records_per_message,
        message_bytes=message_bytes,
    )
    for partition in partitions:
        expected = [value for key, value in records if library_partition(key, partitions) == partition]
        sent = [value for m in messages if m.partition == partition for value in _records_of(m)]
        assert sent == expected  # each record once, in its key's partition, in the order logged
    previous: Message | None = None
    for message in messages:
        assert message.records == len(_records_of(message))
        assert 1 <= message.records <= records_per_message
        if message.records > 1:
            assert len(message.value) <= message_bytes
            assert message.key is None
        else:
            assert (message.key, message.value) in records
        if previous is not None and previous.partition == message.partition:
            # a message ends only when the next record would not fit it
            would_be = len(previous.value) + 1 + len(_records_of(message)[0])
            assert previous.records == records_per_message or would_be > message_bytes
        previous = message


def test_messages_by_hand() -> None:
    """Keys b"a" and b"abc" over 1,000 partitions: 524 and 107 (the Java client's, kafka-python's vector)."""
    a, abc = b"a", b"abc"
    records = [(a, b"1"), (abc, b"22"), (a, b"333"), (a, b"4444"), (abc, b"5")]
    messages = group_messages(
        records, list(range(1000)), KeyHashPartitioner(), records_per_message=2, message_bytes=100
    )
    assert messages == [
        Message(524, 2, None, b"1\n333"),
        Message(524, 1, a, b"4444"),
        Message(107, 2, None, b"22\n5"),
    ]
    by_bytes = group_messages(records, list(range(1000)), KeyHashPartitioner(), records_per_message=9, message_bytes=5)
    # "1\n333" is 5 bytes; "4444" would make it 10; "22\n5" is 4
    assert by_bytes == [Message(524, 2, None, b"1\n333"), Message(524, 1, a, b"4444"), Message(107, 2, None, b"22\n5")]
    alone = group_messages([(a, b"x" * 50)], [0], KeyHashPartitioner(), records_per_message=9, message_bytes=5)
    assert alone == [Message(0, 1, a, b"x" * 50)]  # larger than the cap: a message of its own


def test_json_of_a_record_never_holds_a_raw_newline() -> None:
    """What lets the sink split a message into its records: orjson escapes a newline inside a string."""
    data = orjson.dumps({"context": {"note": "two\nlines\r\n", "k\n": 1}})
    assert b"\n" not in data
    assert orjson.loads(data)["context"]["note"] == "two\nlines\r\n"


@pytest.mark.parametrize("options", [{"records_per_message": 0}, {"message_bytes": 0}])
def test_a_message_of_no_records_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="at least one record"):
        ShadowLogger("127.0.0.1:1", "uc", create_topic=False, **options)

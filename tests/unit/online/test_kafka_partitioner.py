"""KeyHashPartitioner: the partition kafka-python's DefaultPartitioner picks, with each key's murmur2 kept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_stubs import Cluster

from online.kafka import DefaultPartitioner, KeyHashPartitioner


def _pick(partitioner: Any, cluster: Cluster, key: bytes | None, topic: str = "t") -> int:
    return int(partitioner.partition(topic, key, key, b"v", b"v", cluster))


@pytest.mark.parametrize(
    ("key", "partition"),
    # The Java client's partitions of these keys over 1,000 partitions (kafka-python's own compatibility vector).
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_a_key_goes_where_the_java_client_sends_it(key: bytes, partition: int) -> None:
    cluster = Cluster({"t": set(range(1000))})
    partitioner = KeyHashPartitioner()
    assert _pick(partitioner, cluster, key) == partition
    assert _pick(partitioner, cluster, key) == partition  # the kept hash answers the same


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=80), min_size=1, max_size=40),
    partitions=st.sets(st.integers(min_value=0, max_value=63), min_size=1, max_size=12),
    kept=st.integers(min_value=1, max_value=8),
)
def test_every_key_goes_to_the_default_partitioners_partition(
    keys: list[bytes], partitions: set[int], kept: int
) -> None:
    cluster = Cluster({"t": partitions})
    ours, library = KeyHashPartitioner(keys=kept), DefaultPartitioner()
    for key in keys + keys:  # the second time from the kept hashes (those not forgotten at the bound)
        assert _pick(ours, cluster, key) == _pick(library, cluster, key)
    assert len(ours._hashes) <= kept


def test_partitions_added_to_a_topic_move_keys_as_the_default_partitioner_does() -> None:
    cluster = Cluster({"t": {0, 1}})
    ours, library = KeyHashPartitioner(), DefaultPartitioner()
    keys = [f'{{"id":{i}}}'.encode() for i in range(200)]
    before = [_pick(ours, cluster, key) for key in keys]
    cluster._partitions["t"] = {0, 1, 2, 3, 4}
    after = [_pick(ours, cluster, key) for key in keys]
    assert after == [_pick(library, cluster, key) for key in keys]
    assert after != before  # the kept hash is of the key, not of its partition


def test_a_record_without_a_key_goes_to_one_of_the_topics_partitions() -> None:
    cluster = Cluster({"t": {3, 5}})
    assert {_pick(KeyHashPartitioner(), cluster, None) for _ in range(50)} <= {3, 5}


def test_a_topic_the_metadata_does_not_know_is_refused_as_the_library_refuses_it() -> None:
    cluster = Cluster({"t": {0}})
    with pytest.raises(ValueError, match="not found"):
        _pick(DefaultPartitioner(), cluster, b"k", topic="other")
    with pytest.raises(ValueError, match="not found"):
        _pick(KeyHashPartitioner(), cluster, b"k", topic="other")

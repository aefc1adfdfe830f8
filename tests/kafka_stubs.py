"""kafka-python's cluster metadata as its partitioners ask it, for tests that compare a partition with the library's."""

from __future__ import annotations

from online.kafka import DefaultPartitioner


class Cluster:
    """The questions a partitioner asks of kafka-python's ClusterMetadata: topic → its partitions."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self._partitions = partitions

    def topics(self) -> set[str]:
        return set(self._partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._partitions.get(topic)

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self._partitions.get(topic)


def library_partition(key: bytes, partitions: set[int]) -> int:
    """The partition kafka-python's `DefaultPartitioner` picks for `key` among `partitions`."""
    return int(DefaultPartitioner().partition("t", key, key, b"v", b"v", Cluster({"t": partitions})))

"""The meter's rules (tests/aws/metering.py): DynamoDB's item sizes and the index writes a
table write makes, as DynamoDB's developer guide states them."""

from __future__ import annotations

from tests.aws.metering import Index, Table, index_writes, item_size, read_units, write_units

TABLE = Table("messages", ("pk",), (
    Index("all", ("status", "sortKey"), "ALL", frozenset()),
    Index("keys", ("status", "sortKey"), "KEYS_ONLY", frozenset()),
    Index("sparse", ("shard",), "INCLUDE", frozenset({"note"})),
))


def test_item_size_counts_names_and_values_by_type() -> None:
    item = {
        "pk": {"S": "ab"},  # 2 + 2
        "n": {"N": "123.40"},  # 1 + 4 significant digits: 2 + 1
        "z": {"N": "0"},  # 1 + 1 + 1
        "b": {"B": b"\x00\x01"},  # 1 + 2 raw bytes
        "t": {"BOOL": True},  # 1 + 1
        "é": {"S": "é"},  # 2 + 2 (UTF-8)
        "m": {"M": {"k": {"S": "v"}}},  # 1 + 3 + (1 + 1 + 1)
        "l": {"L": [{"N": "1"}]},  # 1 + 3 + (2 + 1)
    }
    assert item_size(item) == 4 + 4 + 3 + 3 + 2 + 4 + 7 + 7


def test_units_round_up_by_kilobyte_and_four_kilobytes() -> None:
    assert [write_units(s) for s in (0, 1, 1024, 1025, 2048)] == [1, 1, 1, 2, 2]
    assert read_units(4096, consistent=True) == 1.0
    assert read_units(4097, consistent=True) == 2.0
    assert read_units(100, consistent=False) == 0.5


def test_index_writes_follow_the_key_and_the_projection() -> None:
    big = {"S": "x" * 1500}
    before = {"pk": {"S": "m"}, "status": {"S": "QUEUED"}, "sortKey": {"S": "1"},
              "shard": {"S": "U1"}, "doc": big}
    # created: one put in every index the item has the keys of
    created = index_writes(TABLE, None, before)
    assert [(w.index, w.partition, w.units) for w in created] == [
        ("all", "QUEUED", 2), ("keys", "QUEUED", 1), ("sparse", "U1", 1)]
    # an attribute only ALL projects changes: one update there, nothing in the others
    changed = {**before, "doc": {"S": "y" * 1500}}
    assert [(w.index, w.units) for w in index_writes(TABLE, before, changed)] == [("all", 2)]
    # the index key changes: a delete and a put; the sparse key goes: a delete
    moved = {**changed, "status": {"S": "DELIVERED"}}
    del moved["shard"]
    assert [(w.index, w.partition) for w in index_writes(TABLE, changed, moved)] == [
        ("all", "QUEUED"), ("all", "DELIVERED"), ("keys", "QUEUED"), ("keys", "DELIVERED"),
        ("sparse", "U1")]
    # nothing an index holds changes: no index write
    assert index_writes(TABLE, moved, dict(moved)) == []

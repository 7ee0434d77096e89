"""The benchmark's virtual S3 server (bench/virtual_s3.py) against a real one.

The same small table (tricky names, mixed histories, a key under many delete markers) is written into a
real server and served virtually; both listings, through airflow-fuse's walk and boto3's paginator with a
delimiter, must say the same thing. A restore through the virtual server must pass its exactness check,
and the check must catch a wrong restore.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_fuse.engine import AmendOptions, amend
from airflow_fuse.listing import iter_object_versions
from bench.virtual_s3 import VirtualS3Server, VirtualTable
from tests.conftest import new_bucket

HEAVY = 17  # a key under 25 delete markers: small pages of only markers


def small_table(server: str = "moto") -> VirtualTable:
    if server == "ceph":  # Ceph does not stack a second delete marker on a deleted key
        return VirtualTable(keys=240, flat=50, odd=40, files_per_part=30, histories=("vm", "v", "vvm", "vmv", "vmvm"))
    return VirtualTable(keys=240, flat=50, odd=40, files_per_part=30,
                        histories=("vm", "v", "vvm", "vmv", "vmm", "vvmm"), heavy={HEAVY: "v" + "m" * 25})


@pytest.fixture(scope="module")
def virtual() -> Iterator[VirtualS3Server]:
    server = VirtualS3Server(small_table()).start()
    yield server
    server.stop()


@pytest.fixture
def fresh(virtual: VirtualS3Server) -> VirtualS3Server:
    virtual.reset()
    return virtual


def write_into(s3: Any, bucket: str, table: VirtualTable) -> dict[tuple[str, str], int]:
    """Write the table's histories into a real bucket, oldest entries first; returns (key, version id) -> the
    entry's ordinal in its history, which is how the virtual server's version ids are compared."""
    ordinals: dict[tuple[str, str], int] = {}
    longest = max(len(table.history(i)) for i in range(table.keys))

    def write(i: int, n: int) -> tuple[str, str, int]:
        key = table.name(i)
        if table.history(i)[n] == "v":
            return key, s3.put_object(Bucket=bucket, Key=key, Body=table.body(i, n))["VersionId"], n
        return key, s3.delete_object(Bucket=bucket, Key=key)["VersionId"], n  # a delete marker

    with ThreadPoolExecutor(8) as pool:
        for n in range(longest):  # round n writes every key's n-th entry: a key's entries in order
            due = [i for i in range(table.keys) if len(table.history(i)) > n]
            for key, vid, ordinal in pool.map(lambda i: write(i, n), due):  # noqa: B023 (used at once)
                ordinals[(key, vid)] = ordinal
    return ordinals


def virtual_ordinal(table: VirtualTable, key: str, version_id: str) -> int:
    i = table.index(key)
    assert i is not None, key
    n = table.ordinal(i, version_id)
    assert n is not None, (key, version_id)
    return n


@pytest.fixture(scope="module")
def real_copy(s3_server: Any) -> Iterator[tuple[Any, str, dict[tuple[str, str], int], VirtualS3Server]]:
    """The small table written into a real server (moto or Ceph), once per server, and served virtually."""
    s3 = s3_server.client()
    bucket = new_bucket(s3)
    table = small_table(s3_server.name)
    ordinals = write_into(s3, bucket, table)
    virtual = VirtualS3Server(table).start()
    yield s3, bucket, ordinals, virtual
    virtual.stop()


@pytest.mark.parametrize("page_size", [11, 1000])
def test_listing_matches_a_real_server(real_copy, page_size: int) -> None:
    s3, bucket, ordinals, virtual = real_copy
    table = virtual.table
    ours = virtual.client()
    # Pages of 11 split the heavy key's 25 markers (a page of only markers, moto) and other keys' histories.
    # (Stock moto lists in O(bucket) per page, so the small pages stay on the smaller prefixes.)
    prefixes = ("t/_b/", "t/x y+ü&%/") if page_size < 100 else ("t/", "t/x y+ü&%/", "t/part=00", "t/_b/")
    for prefix in prefixes:
        real = [(e.key, ordinals[(e.key, e.version_id)], e.is_delete_marker, e.is_latest, e.size, e.etag)
                for e in iter_object_versions(s3, bucket, prefix, page_size=page_size)]
        served = [(e.key, virtual_ordinal(table, e.key, e.version_id), e.is_delete_marker, e.is_latest, e.size,
                   e.etag) for e in iter_object_versions(ours, "bench", prefix, page_size=page_size)]
        assert served == real, prefix
        assert len(served) > 0
    everything = list(iter_object_versions(ours, "bench", "t/", page_size=page_size))
    assert len(everything) == table.entry_count()
    assert any(" " in e.key and "+" in e.key and "ü" in e.key for e in everything)


def paginate(s3: Any, bucket: str, ordinals: Any, **kwargs: Any) -> tuple[list[str], list[tuple]]:
    prefixes: list[str] = []
    entries: list[tuple] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kwargs):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        for kind, items in (("v", page.get("Versions", [])), ("m", page.get("DeleteMarkers", []))):
            entries += [(i["Key"], ordinals(i["Key"], i["VersionId"]), kind, i["IsLatest"]) for i in items]
    return prefixes, sorted(entries)


@pytest.mark.parametrize("page_size", [5, 1000])
def test_delimiter_listing_matches_a_real_server(real_copy, page_size: int) -> None:
    s3, bucket, ordinals, virtual = real_copy
    table = virtual.table
    ours = virtual.client()
    for prefix in ("t/", "", "t/part=001/", "t/x"):
        args = {"Prefix": prefix, "Delimiter": "/", "PaginationConfig": {"PageSize": page_size}}
        real = paginate(s3, bucket, lambda k, v: ordinals[(k, v)], **args)
        served = paginate(ours, "bench", lambda k, v: virtual_ordinal(table, k, v), **args)
        assert served == real, prefix
    prefixes, _ = paginate(ours, "bench", None, Prefix="t/", Delimiter="/")
    assert prefixes == ["t/_b/", "t/part=000/", "t/part=001/", "t/part=002/", "t/part=003/", "t/part=004/",
                        "t/x y+ü&%/"]


def stats(server: VirtualS3Server, what: str) -> dict:
    with urllib.request.urlopen(f"{server.endpoint}/{what}") as response:
        return json.loads(response.read())


@pytest.mark.parametrize("strategy", ["auto", "copy"])
def test_a_restore_through_it_is_exact(fresh: VirtualS3Server, strategy: str) -> None:
    s3 = fresh.client()
    key = fresh.table.name(HEAVY)
    assert s3.list_object_versions(Bucket="bench", Prefix=key)["DeleteMarkers"][0]["IsLatest"]
    before = stats(fresh, "__check")
    assert before["exact"] is False and before["restored_keys"] == 0

    report = amend(s3, table="s3://bench/t/", options=AmendOptions(strategy=strategy)).summary()

    check = stats(fresh, "__check")
    assert check == {"exact": True, "lost_keys": fresh.table.deleted_key_count(), "restored_keys": report["restored"],
                     "wrong_keys": 0, "violations": 0, "problems": []}
    assert check["lost_keys"] == 160  # 4 in 6 histories end in a marker; the heavy key replaces a lost one
    body = s3.get_object(Bucket="bench", Key=key)["Body"].read()
    assert body == fresh.table.body(HEAVY, 0)
    counted = stats(fresh, "__stats")
    assert counted["ListObjectVersions"] >= 1
    assert counted.get("DeleteObjects" if strategy == "auto" else "CopyObject", 0) >= 1


def test_the_check_catches_a_wrong_restore(fresh: VirtualS3Server) -> None:
    s3 = fresh.client()
    table = fresh.table
    lost = [i for i in range(table.keys) if table.history(i) == "vvm"][:2]
    healthy = next(i for i in range(table.keys) if table.history(i) == "vmv")
    # Removing the marker of one lost key is right; of another, deleting its newest data version is not.
    right, wrong = (table.name(i) for i in lost)
    answer = s3.delete_objects(Bucket="bench", Delete={"Objects": [
        {"Key": right, "VersionId": table.version_id(lost[0], 2)},
        {"Key": wrong, "VersionId": table.version_id(lost[1], 1)}]})
    assert [d["Key"] for d in answer["Deleted"]] == [right]
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(wrong, "AccessDenied")]
    assert s3.get_object(Bucket="bench", Key=right)["Body"].read() == table.body(lost[0], 1)
    # A copy of an older version over a lost key, and any copy over a live one, are wrong as well.
    s3.copy_object(Bucket="bench", Key=wrong, CopySource={"Bucket": "bench", "Key": wrong,
                                                            "VersionId": table.version_id(lost[1], 0)})
    s3.copy_object(Bucket="bench", Key=table.name(healthy), CopySource={"Bucket": "bench", "Key": right})

    check = stats(fresh, "__check")
    assert check["exact"] is False
    assert check["restored_keys"] == 1 and check["violations"] == 2 and check["wrong_keys"] == 2
    assert any("data version" in p for p in check["problems"])
    assert any("lost keys were not restored" in p for p in check["problems"])

"""The peers' request counts in bench/prefix_restore.py: rclone's ``--dump headers`` log, read back by operation."""

from __future__ import annotations

from bench.prefix_restore import rclone_requests

# Trimmed from a real rclone 1.60.1 run (copy from a version_at remote, server-side across configs) against moto.
LOG = """\
2026/11/29 18:24:50 DEBUG : >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>
2026/11/29 18:24:50 DEBUG : HTTP REQUEST (req 0xc00043cc00)
2026/11/29 18:24:50 DEBUG : GET /rrr?delimiter=&max-keys=1000&prefix=t&versions= HTTP/1.1
Host: 127.0.0.1:43449
User-Agent: rclone/
Authorization: XXXX

2026/11/29 18:24:50 DEBUG : >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>
2026/11/29 18:24:50 DEBUG : HEAD /rrr/t HTTP/1.1
Host: 127.0.0.1:43449

2026/11/29 18:24:50 DEBUG : GET /rrr?delimiter=&max-keys=1000&prefix=t%2F HTTP/1.1
Host: 127.0.0.1:43449

2026/11/29 18:24:50 DEBUG : PUT /rrr/t/k0 HTTP/1.1
Host: 127.0.0.1:43449
Content-Length: 0
X-Amz-Copy-Source: rrr/t/k0?versionId=bfabc71d-d179-42ab-b299-06ee9dc709b7
X-Amz-Metadata-Directive: COPY

2026/11/29 18:24:50 DEBUG : <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<
2026/11/29 18:24:50 DEBUG : HTTP RESPONSE (req 0xc00043cc00)
2026/11/29 18:24:50 DEBUG : HTTP/1.1 200 OK
2026/11/29 18:24:50 DEBUG : PUT /rrr/t/k1 HTTP/1.1
Host: 127.0.0.1:43449
Content-Length: 3

2026/11/29 18:24:50 DEBUG : HEAD /rrr/t/k0 HTTP/1.1
Host: 127.0.0.1:43449
"""


def test_rclone_requests_are_named_by_operation_copy_told_from_put_by_its_header():
    assert rclone_requests(LOG) == {"ListObjectVersions": 1, "HeadObject": 2, "ListObjects": 1, "CopyObject": 1,
                                    "PutObject": 1}


def test_the_response_lines_of_a_dump_are_not_counted():
    assert rclone_requests("2026/11/29 18:24:50 DEBUG : HTTP/1.1 200 OK\n") == {}

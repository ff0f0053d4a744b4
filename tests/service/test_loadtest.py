"""The load generator's pieces that need no server: reading wrk's report."""

import pytest

from lsr.errors import InputError
from lsr.service.loadtest import parse_wrk

REPORT = """Running 1s test @ http://127.0.0.1:8102/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    87.98us  174.81us   4.16ms   99.14%
    Req/Sec    26.32k     0.96k   27.57k    63.64%
  Latency Distribution
     50%   73.00us
     75%   82.00us
     90%   90.00us
     99%    2.13ms
  28749 requests in 1.10s, 6.39MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  26154.10
Transfer/sec:      5.81MB
"""


def test_wrk_reports_are_read():
    r = parse_wrk(REPORT, 2)
    assert (r.requests, r.seconds, r.qps) == (28749, 1.10, 26154.10)
    assert r.p50_ms == pytest.approx(0.073) and r.p99_ms == pytest.approx(2.13)
    assert r.errors == 5 + 2 + 1 and r.concurrency == 2
    with pytest.raises(InputError, match="cannot read wrk"):
        parse_wrk("wrk: unable to connect", 2)

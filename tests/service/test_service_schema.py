"""schemathesis generates requests from the app's OpenAPI schema: none may get a 5xx.

The operations are driven with Hypothesis directly (schemathesis' own pytest plugin does not
load under this pytest version).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from lsr import sample_dataset
from lsr.service.app import create_app
from lsr.service.cli import main


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "idx"
    assert main(["index", str(sample_dataset()), "--out", str(out)]) == 0
    app = create_app(out, api_key="k", flush_threshold=5)  # flushes and merges run too
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            headers = {"X-API-Key": "k"} if case.method in ("POST", "DELETE") else {}
            response = case.call(headers=headers)
            assert response.status_code < 500, (case.method, case.path, response.text)

        check()

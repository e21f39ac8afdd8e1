"""Schemathesis against the service's own OpenAPI document, over real HTTP with authentication on:
no request, however odd, gets a 5xx or a response that breaks the document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from music.engines.demucs_models import DEFAULT_TEST_MODEL
from tests.integration.conftest import Service, deploy, undeploy

pytestmark = pytest.mark.integration

KEY = "ssk_contract-test-key-0123456789"


@pytest.fixture(scope="module")
def service(serve_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = deploy(
        serve_url, data_dir=str(tmp_path_factory.mktemp("data-contract")), demucs_model_dir=str(model_dir),
        demucs_model=DEFAULT_TEST_MODEL, auth_required=True, api_keys=KEY, max_uploads_per_minute=1000, max_active_jobs_per_key=1000,
    )  # fmt: skip
    yield svc
    undeploy(svc)


def test_no_server_errors_and_responses_match_the_document(service: Service) -> None:
    # Driven by hand (schemathesis' pytest fixture loader does not run under pytest 9): every operation,
    # up to 30 generated requests each.
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(
                headers={"X-API-Key": KEY},
                checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
                timeout=60,
            )

        check()

"""What the serving tests need: tritonclient (the ``serve`` extra) and a Triton server environment
(``carafe-deploy serve --install``). Where either is missing they skip, saying which and how to get it, except under
``CARAFE_DEPLOY_REQUIRE_TRITON=1`` (CI sets it after installing both), where a missing piece fails them."""

import os

import pytest

REQUIRE = "CARAFE_DEPLOY_REQUIRE_TRITON"


def unavailable(reason: str):
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1: the serving tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tritonclient():
    try:
        import tritonclient.grpc
        import tritonclient.http
    except ImportError as exc:
        unavailable(f"tritonclient is not installed ({exc}): pip install -e '.[serve]'")
    return tritonclient


@pytest.fixture(scope="session")
def triton_install(tritonclient):
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.serving import find_server

    try:
        return find_server()
    except MissingDependencyError as exc:
        unavailable(str(exc))

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect server and database for the whole session (started once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """The tiny random-weight LLaVA-architecture understander for backend tests, built offline once per session."""
    from g2u_tasks.backends.tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture
def fresh_models():
    """Empty the per-process resident model cache (every role) before and after a test."""
    from g2u_tasks.backends import registry

    registry.clear()
    yield
    registry.clear()


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# tests/gpu runs only where CUDA exists (`python -m pytest tests/gpu` on a GPU machine); elsewhere it
# is not collected at all rather than reported as skipped.
collect_ignore = [] if _has_cuda() else ["gpu"]

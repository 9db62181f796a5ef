"""Session-wide fixtures: the real default pair and two self-pairs, loaded once.

The models come from the [models] extra (PyPI packages); nothing is downloaded here.
"""

import signal

import pytest

from blendin_local.backends.llama import LoadOptions
from blendin_local.errors import BlendinError
from blendin_local.pair import BlendPair

OPTIONS = LoadOptions(n_ctx=1024)


@pytest.fixture(scope="session")
def default_pair():
    pair = BlendPair.load(options=OPTIONS)
    yield pair
    pair.close()


@pytest.fixture(scope="session")
def smollm_self_pair():
    pair = BlendPair.load("smollm2-135m-instruct", "smollm2-135m-instruct", options=OPTIONS)
    yield pair
    pair.close()


@pytest.fixture(scope="session")
def gemma_self_pair():
    # Batches of one: llama.cpp's kernels give Gemma 3 slightly different logits for a token
    # evaluated inside a batch (see docs/design.md), and the guide catches up in batches.
    pair = BlendPair.load("gemma3-270m", "gemma3-270m", options=LoadOptions(n_ctx=1024, n_batch=1))
    yield pair
    pair.close()


def restore_sigint() -> None:
    """preexec_fn for a child a test interrupts with SIGINT. A shell starts background jobs with
    SIGINT ignored, and Python keeps a signal ignored that it finds ignored at start-up: a child
    of a suite run that way would never see the Ctrl-C it is tested for."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def kernel_verdict_settled(request):
    """Settle (and cache) whether llama.cpp's AMX/repacked kernels run here before any test starts a
    child process: on a CPU where they crash, the process that finds out prints a notice line,
    and tests that count a child's stderr lines must not be that process.

    Only a session with model tests needs it (no other test starts a child that loads a model),
    and without the [models] extra there is no model to probe with: the model tests say so."""
    if not any(item.get_closest_marker("models") for item in request.session.items):
        return
    from blendin_local.backends.cpu_kernels import GATE, repack_setting
    from blendin_local.backends.registry import resolve_model

    try:
        model = resolve_model("smollm2-135m-instruct")
    except BlendinError:
        return
    GATE.allows_extra_buffers(repack_setting(None), [model])

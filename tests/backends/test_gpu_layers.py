"""GPU by default where there is one: with no -ngl/--gpu-layers, every layer is offloaded when
this llama.cpp build can offload (llama_supports_gpu_offload), and none otherwise. No GPU here,
so the test watches the layer count reach llama.cpp for both answers of the support flag."""

import pytest

from blendin_local.backends import llama as llama_backend
from blendin_local.backends.llama import ALL_LAYERS, LlamaModel, LoadOptions, gpu_layers_for
from blendin_local.backends.registry import resolve_model
from blendin_local.errors import BlendinError
from blendin_local.interfaces.cli import main


def test_the_default_follows_the_support_flag_and_an_asked_count_wins():
    assert gpu_layers_for(None, supports_offload=True) == ALL_LAYERS
    assert gpu_layers_for(None, supports_offload=False) == 0
    assert gpu_layers_for(0, supports_offload=True) == 0
    assert gpu_layers_for(12, supports_offload=False) == 12


@pytest.mark.parametrize(("supports", "asked", "expected"), [(True, None, -1), (False, None, 0), (True, 3, 3)])
def test_the_layer_count_reaches_llama_cpp(monkeypatch, supports, asked, expected):
    seen = []

    def load_from_file(path, params):
        seen.append(params.n_gpu_layers)
        return None  # refused: the constructor stops there with its one-line error

    monkeypatch.setattr(llama_backend, "supports_gpu_offload", lambda: supports)
    monkeypatch.setattr(llama_backend.llama, "llama_model_load_from_file", load_from_file)
    with pytest.raises(BlendinError):
        LlamaModel(resolve_model("smollm2-135m-instruct"), LoadOptions(gpu_layers=asked, repack="off"))
    assert seen == [expected]


def test_ngl_is_an_alias_of_gpu_layers(monkeypatch):
    asked = []
    monkeypatch.setattr(llama_backend, "gpu_layers_for", lambda layers, supports: asked.append(layers) or 0)
    for flags in (["-ngl", "0"], ["--gpu-layers", "0"], []):
        main(["generate", "Hi", "-n", "1", "--method", "guide", "-c", "256", *flags])
    assert asked == [0, 0, 0, 0, None, None]  # base and guide each, the default last

"""BlendIn, offline: an unaligned base model guided by a small aligned model, blended where the base is unsure.

The Python API's names are imported on first use, so that importing one layer (say the pure
engine, `blendin_local.engine.generation`) does not load llama.cpp's native bindings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blendin_local.backends.llama import LoadOptions
    from blendin_local.engine.generation import Finished, GenerationResult, StepEvent
    from blendin_local.engine.prompts import Message
    from blendin_local.engine.settings import GenerationSettings
    from blendin_local.errors import BlendinError
    from blendin_local.pair import BlendPair

_HOMES = {
    "BlendPair": "blendin_local.pair",
    "BlendinError": "blendin_local.errors",
    "Finished": "blendin_local.engine.generation",
    "GenerationResult": "blendin_local.engine.generation",
    "GenerationSettings": "blendin_local.engine.settings",
    "LoadOptions": "blendin_local.backends.llama",
    "Message": "blendin_local.engine.prompts",
    "StepEvent": "blendin_local.engine.generation",
}
__all__ = [
    "BlendPair",
    "BlendinError",
    "Finished",
    "GenerationResult",
    "GenerationSettings",
    "LoadOptions",
    "Message",
    "StepEvent",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'blendin_local' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)

"""BlendIn, offline: an unaligned base model guided by a small aligned model, blended where the base is unsure."""

from blendin_local.errors import BlendinError
from blendin_local.engine.generation import Finished, GenerationResult, GenerationSettings, StepEvent
from blendin_local.backends.llama import LoadOptions
from blendin_local.pair import BlendPair
from blendin_local.engine.prompts import Message

__all__ = ["BlendPair", "BlendinError", "Finished", "GenerationResult", "GenerationSettings", "LoadOptions",
           "Message", "StepEvent"]

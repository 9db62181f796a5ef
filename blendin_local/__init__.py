"""BlendIn, offline: an unaligned base model guided by a small aligned model, blended where the base is unsure."""

from .errors import BlendinError
from .generation import Finished, GenerationResult, GenerationSettings, StepEvent
from .llama_backend import LoadOptions
from .pair import BlendPair
from .prompts import Message

__all__ = ["BlendPair", "BlendinError", "Finished", "GenerationResult", "GenerationSettings", "LoadOptions",
           "Message", "StepEvent"]

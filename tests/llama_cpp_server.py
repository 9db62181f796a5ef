"""`python -m llama_cpp.server` for tests, with llama.cpp's extra CPU buffers as blendin decided.

    python tests/llama_cpp_server.py --model M.gguf [llama_cpp.server options]

llama-cpp-python's server has no option for llama.cpp's `use_extra_bufts`; on a CPU where those
kernels crash (cpu_kernels.py) it would die at its first batch. This wrapper asks blendin's
kernel gate (a cached verdict, or one probe) and, where the kernels crash, makes every model the
server loads go without them, then runs the server unchanged.
"""

import runpy
import sys
from pathlib import Path

import llama_cpp.llama_cpp as llama

from blendin_local.backends.cpu_kernels import GATE, repack_setting

SCRIPT = Path(__file__)


def command(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *args]


def main() -> None:
    model = Path(sys.argv[sys.argv.index("--model") + 1])
    if not GATE.allows_extra_buffers(repack_setting(None), [model]):
        default_params = llama.llama_model_default_params

        def params_without_extra_buffers():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama.llama_model_default_params = params_without_extra_buffers
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

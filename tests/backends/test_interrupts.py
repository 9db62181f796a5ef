"""Ctrl-C during llama.cpp's long calls (backends/llama.py, interrupt_after)."""

import os
import signal
import threading
import time

import pytest

from blendin_local.backends.llama import interrupt_after, made_interruptibly


def test_an_interrupt_during_a_long_call_is_raised_after_it():
    """Ctrl-C while llama.cpp works (and calls back into Python as it logs) must neither vanish
    nor print a traceback from inside the callback: it is raised once the call returns."""
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_after():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, in Python, as in a log callback
            reached.append("the call went on to its end")
    assert reached and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_an_interrupt_nothing_changes_and_threads_are_left_alone():
    with interrupt_after():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    reached = []

    def in_a_thread():
        with interrupt_after():  # signals reach the main thread only: nothing to defer here
            reached.append("thread")

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert reached == ["thread"]


def interrupted_while_making(made):
    """A stand-in for a long llama.cpp call that Ctrl-C hits before it returns `made`."""

    def create():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        return made

    return create


def test_what_a_call_made_as_the_interrupt_came_is_freed_and_the_interrupt_raised():
    freed = []
    with pytest.raises(KeyboardInterrupt):
        made_interruptibly(interrupted_while_making("a context"), freed.append)
    assert freed == ["a context"]


def test_an_interrupted_call_that_made_nothing_frees_nothing_and_an_uninterrupted_one_keeps_it():
    freed = []
    with pytest.raises(KeyboardInterrupt):
        made_interruptibly(interrupted_while_making(None), freed.append)  # None: llama.cpp's NULL, a failed load
    assert made_interruptibly(lambda: "a model", freed.append) == "a model"
    assert freed == []

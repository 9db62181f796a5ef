"""user_path expands `~` as a shell does and never raises for what a user can type."""

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from blendin_local.user_paths import user_path


def test_home_and_a_users_home_are_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    assert user_path("~") == Path("/home/someone")
    assert user_path("~/models/x.gguf") == Path("/home/someone/models/x.gguf")
    assert user_path("~root/x") == Path(os.path.expanduser("~root")) / "x"
    assert user_path(Path("rel/x")) == Path("rel/x")


def test_a_user_who_does_not_exist_is_left_as_written():
    # Path("~0").expanduser() raises RuntimeError: the chat's /save ~0 reached the catch-all
    assert user_path("~0") == Path("~0")
    assert user_path("~no-such-user-blendin/x.json") == Path("~no-such-user-blendin/x.json")
    assert user_path("~a\x00b/x") == Path("~a\x00b/x")  # the user lookup's ValueError


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=40).map(lambda s: "~" + s))
def test_any_tilde_path_gives_a_path(text):
    assert isinstance(user_path(text), Path)

"""The vocabulary bridge on small hand-made vocabularies."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from blendin_local.engine import bridge as bridge_module
from blendin_local.engine.bridge import UNMAPPED, Extensions, PrefixFinder, VocabBridge, Vocabulary, byte_index

BASE = Vocabulary(
    pieces=(b"", b"'", b"s", b"Here", b" the", b" answer", b" ans", b"w", b"\xe2", b"\xe2"),
    eog_ids=frozenset({0}),
    eos_id=0,
)
GUIDE = Vocabulary(
    pieces=(b"", b"'s", b"'", b"Here", b" the", b" answ", b"er", b"", b"\xf0\x9f"), eog_ids=frozenset({0, 7}), eos_id=0
)


@pytest.fixture
def bridge():
    return VocabBridge.build(BASE, GUIDE)


def test_exact_prefix_and_unmapped(bridge):
    assert bridge.g2b[3] == 3 and bridge.exact[3]  # "Here"
    assert bridge.g2b[1] == 1 and not bridge.exact[1]  # "'s" -> "'"
    assert bridge.g2b[5] == 6 and not bridge.exact[5]  # " answ" -> " ans"
    assert bridge.g2b[6] == UNMAPPED  # "er": no base token starts it
    assert bridge.g2b[8] == UNMAPPED


def test_every_end_of_generation_token_maps_to_the_base_eos(bridge):
    assert bridge.g2b[0] == 0 and bridge.g2b[7] == 0


def test_stats(bridge):
    stats = bridge.stats()
    assert (stats.exact, stats.prefix, stats.unmapped, stats.control) == (3, 2, 2, 2)
    assert bridge.stats().as_dict()["exact_pct"] == pytest.approx(100 * 3 / 7, abs=0.01)


def test_projection_keeps_mapped_mass_and_drops_the_rest(bridge):
    p = np.array([0.05, 0.4, 0.1, 0.2, 0.1, 0.05, 0.06, 0.02, 0.02])
    on_base = bridge.project(p)
    assert on_base.shape == (len(BASE.pieces),)
    assert on_base[1] == pytest.approx(0.5)  # "'s" and "'" both say the text goes on with "'"
    assert on_base[0] == pytest.approx(0.07)
    assert on_base.sum() == pytest.approx(1.0 - 0.06 - 0.02)


def test_sparse_projection_is_the_dense_projection_bit_for_bit(bridge):
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.dirichlet(np.full(len(GUIDE.pieces), 0.5))
        dense = np.bincount(bridge.g2b[bridge.mapped], weights=p[bridge.mapped], minlength=bridge.n_base)
        sparse = bridge.project_sparse(p)
        assert np.array_equal(sparse.dense(), dense)
        assert list(sparse.index) == sorted(set(bridge.g2b[bridge.mapped]))


def test_fingerprint_changes_with_any_piece():
    changed = Vocabulary(pieces=BASE.pieces[:-1] + (b"\xe3",), eog_ids=BASE.eog_ids, eos_id=0)
    assert BASE.fingerprint() == Vocabulary(BASE.pieces, BASE.eog_ids, 0).fingerprint() != changed.fingerprint()


def test_duplicate_pieces_prefer_the_tokenizers_choice_else_the_highest_id():
    assert byte_index(BASE)[b"\xe2"] == 9
    vocab = Vocabulary(pieces=(b"a", b"b", b"a"), eog_ids=frozenset(), eos_id=0)
    assert byte_index(vocab, tokenize=lambda data: [0])[b"a"] == 0


def test_prefix_finder():
    finder = PrefixFinder({b"a": 1, b"ab": 2, b"abcd": 3})
    assert finder.longest(b"abc") == 2
    assert finder.longest(b"abcde") == 3
    assert finder.longest(b"x") == UNMAPPED


def test_extensions_are_strict_and_complete():
    ext = Extensions({b"a": 1, b"ab": 2, b"abc": 3, b"b": 4, b"a\xff": 5, b"a\xff\xff": 6, b"\xff": 7})
    assert sorted(ext.of(b"a")) == [2, 3, 5, 6]
    assert sorted(ext.of(b"a\xff")) == [6]
    assert list(ext.of(b"abc")) == []
    assert ext.exist(b"ab") and not ext.exist(b"b")
    assert sorted(ext.of(b"")) == [1, 2, 3, 4, 5, 6, 7]


def test_bridge_is_cached_on_disk_by_both_vocabularies(tmp_path, monkeypatch):
    first = VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    files = list(tmp_path.glob("bridge-*.npz"))
    assert len(files) == 1
    with monkeypatch.context() as patched:
        patched.setattr(bridge_module, "build_map", lambda *args: pytest.fail("built again despite the cache"))
        again = VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    assert (again.g2b == first.g2b).all() and (again.exact == first.exact).all()
    other = Vocabulary(pieces=GUIDE.pieces[:-1] + (b"zz",), eog_ids=GUIDE.eog_ids, eos_id=0)
    VocabBridge.build(BASE, other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("bridge-*.npz"))) == 2


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    path = next(tmp_path.glob("bridge-*.npz"))
    path.write_bytes(b"garbage")
    rebuilt = VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    assert rebuilt.g2b[1] == 1


def _archive(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.int64, np.int32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.integers(min_value=0, max_value=400).map(
            lambda n: _archive(g2b=np.zeros(9, np.int64), exact=np.ones(9, bool))[:n]
        ),
        st.builds(lambda g, e: _archive(g2b=g, exact=e), _ARRAYS, _ARRAYS.filter(lambda e: e.dtype != np.bool_)),
        _ARRAYS.map(_npy),  # one array, no archive
        st.builds(
            lambda v: _archive(g2b=np.full(9, v, np.int64), exact=np.ones(9, bool)),
            st.integers(-(2**62), 2**62).filter(lambda v: not UNMAPPED <= v < len(BASE.pieces)),
        ),
    )
)
def test_any_cache_file_content_gives_the_built_bridge(tmp_path, content):
    """A damaged, truncated or foreign file where the cache should be (the disk filled, another
    version wrote it) is never used, nor fatal: the bridge is built again, as without a cache.
    (A well-formed map of the right size and range cannot be told from the real one.)"""
    fresh = VocabBridge.build(BASE, GUIDE)
    VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    path = next(tmp_path.glob("bridge-*.npz"))
    path.write_bytes(content)
    loaded = VocabBridge.build(BASE, GUIDE, cache_dir=tmp_path)
    assert (loaded.g2b == fresh.g2b).all() and (loaded.exact == fresh.exact).all()
    assert loaded.g2b.dtype == np.int64 and loaded.exact.dtype == np.bool_


def test_identical_vocabularies_bridge_to_the_identity():
    bridge = VocabBridge.build(GUIDE, GUIDE)
    text = [i for i, p in enumerate(GUIDE.pieces) if p]
    assert (bridge.g2b[text] == text).all() and bridge.exact[text].all()

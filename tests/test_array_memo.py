"""The content-keyed memo behind the closed forms' repeated decompositions: its keys tell arrays apart, it
evicts the least recently used, and the closed forms return what a fresh computation would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalign.align import closed_form
from modalign.align.array_memo import ArrayMemo, array_key
from modalign.align.heads.linear import LinearHead


def test_keys_differ_by_tag_contents_shape_dtype_partner_and_extra() -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    same = a.copy()
    keys = {
        array_key("eigh", a),
        array_key("svd", a),
        array_key("eigh", a + 1e-12),
        array_key("eigh", a.reshape(3, 2)),
        array_key("eigh", a.astype(np.float32)),
        array_key("eigh", a, a),
        array_key("eigh", a, None, extra=0.1),
        array_key("eigh", a, extra=0.2),
    }
    assert len(keys) == 8
    assert array_key("eigh", same) == array_key("eigh", a)
    # a transposed view has other bytes in C order: the key follows the contents, not the buffer
    assert array_key("eigh", a.T) == array_key("eigh", np.ascontiguousarray(a.T))
    assert array_key("eigh", a, None) != array_key("eigh", a, np.zeros((0,)))
    assert array_key("eigh", None, a) != array_key("eigh", None, a + 1)  # arrays after a missing one still count


def test_memo_keeps_the_most_recently_used_and_skips_values_that_are_too_large() -> None:
    memo: ArrayMemo[str] = ArrayMemo(capacity=2, max_bytes=100)
    assert memo.put(b"a", "A") == "A" and memo.get(b"a") == "A"
    memo.put(b"b", "B")
    assert memo.get(b"a") == "A"  # a is now the most recent: b goes first
    memo.put(b"c", "C")
    assert len(memo) == 2 and b"b" not in memo and memo.get(b"a") == "A" and memo.get(b"c") == "C"
    memo.put(b"a", "A2")  # a new value replaces the old and becomes the most recent
    memo.put(b"d", "D")
    assert memo.get(b"a") == "A2" and b"c" not in memo
    assert memo.put(b"big", "X", nbytes=101) == "X" and b"big" not in memo and len(memo) == 2
    memo.put(b"edge", "E", nbytes=100)
    assert memo.get(b"edge") == "E"
    assert memo.get(b"missing") is None
    memo.clear()
    assert len(memo) == 0
    unbounded: ArrayMemo[str] = ArrayMemo(capacity=1)
    unbounded.put(b"k", "V", nbytes=10**12)
    assert unbounded.get(b"k") == "V"


@pytest.mark.parametrize("op", ["eigh", "svd", "gram", "isqrt"])
def test_memoised_decompositions_equal_a_fresh_computation_and_are_reused(op: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    c = x.T @ x / 40
    m = x if op == "gram" else c
    fresh = {
        "eigh": lambda: np.linalg.eigh(c),
        "svd": lambda: np.linalg.svd(c, full_matrices=False),
        "gram": lambda: (x.T @ x / 40,),
        "isqrt": lambda: (closed_form._inv_sqrt(closed_form._shrunk(c, 0.3)),),
    }[op]()
    first = closed_form._memo(op, m, reg=0.3 if op == "isqrt" else 0.0)
    assert len(first) == len(fresh)
    for got, want in zip(first, fresh, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-10)
    again = closed_form._memo(op, m.copy(), reg=0.3 if op == "isqrt" else 0.0)
    assert all(g is f for g, f in zip(again, first, strict=True))
    z = rng.normal(size=(40, 5))
    other = closed_form._memo(op, z if op == "gram" else z.T @ z / 40, reg=0.3 if op == "isqrt" else 0.0)
    assert not np.allclose(other[0], first[0])
    if op == "isqrt":  # another shrinkage is another matrix
        assert not np.allclose(closed_form._memo(op, m, reg=0.6)[0], first[0])
    if op == "gram":
        y = rng.normal(size=(40, 3))
        np.testing.assert_allclose(closed_form._memo(op, x, y)[0], x.T @ y / 40, atol=1e-12)
    with pytest.raises(ValueError, match="unknown operation 'qr'"):
        closed_form._memo("qr", m)


@pytest.mark.parametrize("input_norm", ["center", "whiten"])
def test_standardized_gives_a_second_head_the_same_conditioning_from_the_memo(input_norm: str) -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(60, 6)) * np.arange(1, 7) + 3).astype(np.float32)
    first, second = LinearHead(6, 4, input_norm=input_norm), LinearHead(6, 4, input_norm=input_norm)
    std = closed_form._standardized(first, x)
    with torch.no_grad():
        want = first.standardize(torch.as_tensor(x)).numpy()
    assert std.dtype == np.float64
    np.testing.assert_allclose(std, want, atol=1e-6)
    assert closed_form._standardized(second, x.copy()) is std  # from the memo ...
    for name, buffer in first.named_buffers():  # ... and the second head is conditioned as the first
        torch.testing.assert_close(dict(second.named_buffers())[name], buffer)
    # the memo's reference head is a copy: refitting the first head elsewhere does not change it
    first.fit_input_stats(x * 5)
    third = LinearHead(6, 4, input_norm=input_norm)
    closed_form._standardized(third, x)
    for name, buffer in second.named_buffers():
        torch.testing.assert_close(dict(third.named_buffers())[name], buffer)
    other_norm = LinearHead(6, 4, input_norm="whiten" if input_norm == "center" else "center")
    assert closed_form._standardized(other_norm, x) is not std

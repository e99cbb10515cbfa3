"""CoSeRec: ItemCF-IUF similarity (sparse = brute force, training split only, cached by data), the short-sequence
rule, insert / substitute in training, and the hybrid switch at the configured epoch."""

import math
import random

import numpy as np
import torch
from tiny import build

from recbole_srma.model import similarity
from recbole_srma.trainer import Trainer

FAST = {"hidden_size": 16, "inner_size": 32}


def brute_force_iuf(user_items, n_items):
    """CoSeRec's definition, pair by pair (dicts of distinct items per user)."""
    C, N = {}, {}
    for items in user_items.values():
        items = set(items)
        for i in items:
            N[i] = N.get(i, 0) + 1
            for j in items:
                if i != j:
                    C[(i, j)] = C.get((i, j), 0.0) + 1.0 / math.log(1 + len(items))
    W = np.zeros((n_items, n_items))
    for (i, j), c in C.items():
        W[i, j] = c / math.sqrt(N[i] * N[j])
    return W


def test_sparse_item_cf_iuf_equals_brute_force():
    rng = random.Random(0)
    n_users, n_items = 40, 25
    user_items = {u: [rng.randint(1, n_items - 1) for _ in range(rng.randint(1, 9))] for u in range(1, n_users)}
    users = [u for u, items in user_items.items() for _ in items]
    items = [i for its in user_items.values() for i in its]  # repeats included: counted once per user
    W = similarity.item_cf_iuf(users, items, n_users, n_items)
    np.testing.assert_allclose(W.toarray(), brute_force_iuf(user_items, n_items), rtol=1e-12, atol=1e-15)
    ids, scores = similarity.top_k(W, 3)
    dense = W.toarray()
    for i in range(n_items):
        row = [(-dense[i, j], j) for j in range(n_items) if dense[i, j] > 0]
        expected = [j for _, j in sorted(row)[:3]]
        assert ids[i][: len(expected)].tolist() == expected
        assert (ids[i][len(expected):] == -1).all()


def test_similarity_uses_the_training_split_only_and_is_cached_by_data(tmp_path):
    # histories up to 50 items hold every tiny sequence whole (the tiny config cuts them at 20)
    config, model, train_data, valid_data, test_data = build("CoSeRec", tmp_path, MAX_ITEM_LIST_LENGTH=50, **FAST)
    dataset = train_data._dataset
    # every user's training items = full history minus the valid and test targets
    full = {}
    for loader in (valid_data, test_data):
        feat = loader._dataset.inter_feat
        for u, seq, n, target in zip(feat["user_id"].tolist(), feat[model.ITEM_SEQ].tolist(),
                                     feat[model.ITEM_SEQ_LEN].tolist(), feat[model.ITEM_ID].tolist()):
            full[u] = seq[:n] + [target]
    held_out = {u: set(items[-2:]) - set(items[:-2]) for u, items in full.items()}
    training = {u: items[:-2] for u, items in full.items()}
    W = similarity.item_cf_iuf(*similarity.training_pairs(dataset, model.ITEM_SEQ, "user_id", model.ITEM_ID),
                               dataset.user_num, dataset.item_num)
    np.testing.assert_allclose(W.toarray(), brute_force_iuf(training, dataset.item_num), atol=1e-12)
    users, items = similarity.training_pairs(dataset, model.ITEM_SEQ, "user_id", model.ITEM_ID)
    pairs = set(zip(users.tolist(), items.tolist()))
    assert not any((u, i) in pairs for u, items_ in held_out.items() for i in items_)

    assert model.similarity_info["cached"] is False
    _, again, *_ = build("CoSeRec", tmp_path, MAX_ITEM_LIST_LENGTH=50, **FAST)
    assert again.similarity_info["cached"] is True
    assert torch.equal(again.similar_item, model.similar_item)
    _, other, *_ = build("CoSeRec", tmp_path, MAX_ITEM_LIST_LENGTH=3, **{k: v for k, v in FAST.items()})
    assert other.similarity_info["cached"] is False  # other training data: another cache entry, never a stale one


def test_lookup_table_maps_to_valid_items_and_keeps_padding_and_mask(tmp_path):
    _, model, *_ = build("CoSeRec", tmp_path, **FAST)
    table = model.similar_item
    assert table.shape == (model.n_items + 1,)
    assert table[0] == 0 and table[model.mask_token] == model.mask_token
    real = table[1 : model.n_items]
    assert ((real >= 1) & (real < model.n_items)).all()
    assert (real != torch.arange(1, model.n_items)).float().mean() > 0.9  # nearly every item has a neighbour


def test_training_views_use_insert_and_substitute_and_short_rule(tmp_path):
    _, model, train_data, *_ = build("CoSeRec", tmp_path, augment_threshold=6, **FAST)
    batch = next(iter(train_data))
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    torch.manual_seed(0)
    grew = False
    for _ in range(20):
        for view, view_len in model.data_augmentation.views(seq, length):
            grew |= bool((view_len > length).any())  # insert ran
            short = length <= 6
            # short rows: insert / substitute / mask only, so never shorter (no crop)
            assert (view_len[short] >= length[short]).all()
            real = torch.arange(seq.size(1))[None, :] < view_len[:, None]
            assert ((view >= 1) & (view <= model.mask_token))[real].all()
    assert grew


def test_hybrid_similarity_switches_on_at_the_configured_epoch(tmp_path):
    config, model, train_data, valid_data, _ = build("CoSeRec", tmp_path, hybrid_warm_up_epochs=2, epochs=3, **FAST)
    tables = []
    original = model.on_train_epoch_start

    def spy(epoch):
        original(epoch)
        tables.append((epoch, model.hybrid_since, model.similar_item.clone()))

    model.on_train_epoch_start = spy
    Trainer(config, model).fit(train_data, valid_data, saved=False)
    assert [e for e, *_ in tables] == [0, 1, 2]
    assert tables[0][1] is None and tables[1][1] is None and tables[2][1] == 2
    assert torch.equal(tables[0][2], tables[1][2])  # offline only before the warm-up
    assert not torch.equal(tables[1][2], tables[2][2])  # embeddings now propose neighbours

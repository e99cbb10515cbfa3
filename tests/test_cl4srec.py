"""CL4SRec: its loss terms, its switches, and that augmentation never touches the stored training data."""

import torch
from tiny import build

from recbole_srma.trainer import Trainer


def _batch(loader):
    return next(iter(loader))


def test_loss_is_rec_plus_weighted_infonce(tmp_path):
    config, model, train_data, *_ = build("CL4SRec", tmp_path)
    batch = _batch(train_data)
    torch.manual_seed(0)
    rec, cl = model.calculate_loss(batch)
    assert rec.dim() == 0 and cl.dim() == 0
    assert torch.isfinite(rec) and torch.isfinite(cl) and cl > 0
    # without dropout the rec term is the full-softmax CE of the backbone
    model.eval()
    with torch.no_grad():
        logits = model.full_sort_predict(batch)
        expected = torch.nn.functional.cross_entropy(logits, batch[model.POS_ITEM_ID])
        rec, _ = model.calculate_loss(batch)
    torch.testing.assert_close(rec, expected)


def test_cl_lambda_zero_switches_the_contrastive_term_off(tmp_path):
    _, model, train_data, *_ = build("CL4SRec", tmp_path, cl_lambda=0.0)
    _, cl = model.calculate_loss(_batch(train_data))
    assert cl.item() == 0.0


def test_contrastive_gradient_reaches_the_encoder(tmp_path):
    _, model, train_data, *_ = build("CL4SRec", tmp_path)
    _, cl = model.calculate_loss(_batch(train_data))
    cl.backward()
    grad = model.backbone.trm_encoder.layer[0].multi_head_attention.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_views_differ_from_the_sequence_and_from_each_other(tmp_path):
    _, model, train_data, *_ = build("CL4SRec", tmp_path)
    batch = _batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    torch.manual_seed(1)
    (s1, l1), (s2, l2) = model.data_augmentation.views(seq, length)
    long_rows = length >= 4
    changed1 = ((s1 != seq).any(1) | (l1 != length))[long_rows]
    differ = ((s1 != s2).any(1) | (l1 != l2))[long_rows]
    assert changed1.float().mean() > 0.8 and differ.float().mean() > 0.8
    assert (s1 == model.mask_token).any() or (s2 == model.mask_token).any()


def test_augmentation_operators_switch(tmp_path):
    _, model, train_data, *_ = build("CL4SRec", tmp_path, augmentations=["crop"], crop_eta=0.5)
    batch = _batch(train_data)
    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    (s1, l1), (s2, l2) = model.data_augmentation.views(seq, length)
    assert not (s1 == model.mask_token).any()
    assert torch.equal(l1, torch.clamp(torch.floor(0.5 * length.double()).long(), min=1))


def test_stored_training_data_is_unchanged_after_a_whole_epoch(tmp_path):
    config, model, train_data, *_ = build("CL4SRec", tmp_path)
    stored = train_data._dataset.inter_feat
    before = {k: stored[k].clone() for k in (model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.POS_ITEM_ID)}
    seen = []
    original = model.data_augmentation.views

    def spy(seq, length, *args, **kwargs):
        views = original(seq, length, *args, **kwargs)
        seen.append(any(not torch.equal(v, seq) for v, _ in views))
        return views

    model.data_augmentation.views = spy
    Trainer(config, model)._train_epoch(train_data, 0)
    assert len(seen) == len(train_data) and all(seen)  # augmentation really ran and changed every batch
    for key, value in before.items():
        assert torch.equal(stored[key], value), key

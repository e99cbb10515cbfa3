"""DuoRec: same-target partners, the loss of each variant against a hand computation, false-negative masking,
an index that is never stale, and one epoch of training per variant."""

import pytest
import torch
import torch.nn.functional as F
from tiny import build

from recbole_srma.model.same_target import ROW_FIELD, SameTargetIndex
from recbole_srma.trainer import Trainer

FAST = {"hidden_size": 16, "inner_size": 32}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def test_index_samples_other_rows_with_the_same_target_uniformly():
    targets = torch.tensor([5, 7, 5, 9, 5, 7])
    index = SameTargetIndex(targets)
    rows = torch.arange(6).repeat(3000)
    partner = index.sample(rows, generator=torch.Generator().manual_seed(0))
    assert torch.equal(targets[partner], targets[rows])
    alone = rows == 3  # the only row with target 9 is its own partner
    assert (partner[alone] == 3).all() and (partner[~alone] != rows[~alone]).all()
    from_zero = partner[rows == 0]
    share = (from_zero == 2).float().mean().item()
    assert set(from_zero.tolist()) == {2, 4} and 0.45 < share < 0.55


def test_partners_in_a_real_batch(tmp_path):
    _, model, train_data, *_ = build("DuoRec", tmp_path, **FAST)
    batch = next(iter(train_data))
    seq, length, partner = model.same_target_partners(batch)
    rows = batch[ROW_FIELD]
    feat = train_data._dataset.inter_feat
    assert torch.equal(feat[model.POS_ITEM_ID][partner], batch[model.POS_ITEM_ID])
    assert torch.equal(seq, feat[model.ITEM_SEQ][partner]) and torch.equal(length, feat[model.ITEM_SEQ_LEN][partner])
    has_other = model.same_target.index.count[rows] > 1
    assert has_other.any() and (partner[has_other] != rows[has_other]).all()
    assert (partner[~has_other] == rows[~has_other]).all()


def _hand_info_nce(a, b, mask=None):
    h = torch.cat([a, b])
    logits = h @ h.t()
    n = len(a)
    excluded = torch.eye(2 * n, dtype=torch.bool)
    if mask is not None:
        excluded |= (mask & ~torch.eye(n, dtype=torch.bool)).repeat(2, 2)
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, (torch.arange(2 * n) + n) % (2 * n))


@pytest.mark.parametrize("contrast", ["dropout_view_vs_same_target", "dropout_pair", "same_target_pair", "both_pairs"])
@pytest.mark.parametrize("masking", [False, True])
def test_loss_equals_a_hand_computation(tmp_path, contrast, masking):
    _, model, train_data, *_ = build(
        "DuoRec", tmp_path, contrast=contrast, false_negative_masking=masking, cl_lambda=0.3, sem_lambda=0.7,
        **FAST, **NO_DROPOUT,
    )
    batch = next(iter(train_data))[:12]
    model.train()
    torch.manual_seed(1)
    rec, cl = model.calculate_loss(batch)
    torch.manual_seed(1)
    partner_seq, partner_len, _ = model.same_target_partners(batch)
    with torch.no_grad():
        z = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        p = model.forward(partner_seq, partner_len)
    target = batch[model.POS_ITEM_ID]
    mask = target[:, None] == target[None, :] if masking else None
    expected_rec = F.cross_entropy(z @ model.item_weights().t(), target)
    # no dropout: the second pass equals the first
    expected = {
        "dropout_view_vs_same_target": 0.7 * _hand_info_nce(z, p, mask),
        "dropout_pair": 0.3 * _hand_info_nce(z, z, mask),
        "same_target_pair": 0.7 * _hand_info_nce(z, p, mask),
        "both_pairs": 0.3 * _hand_info_nce(z, z, mask) + 0.7 * _hand_info_nce(z, p, mask),
    }[contrast]
    torch.testing.assert_close(rec.detach(), expected_rec, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cl.detach(), expected, rtol=1e-5, atol=1e-6)


def test_masking_changes_the_loss_when_targets_repeat(tmp_path):
    losses = []
    for masking in (False, True):
        _, model, train_data, *_ = build("DuoRec", tmp_path, false_negative_masking=masking, **FAST, **NO_DROPOUT)
        batch = next(iter(train_data))
        assert (batch[model.POS_ITEM_ID][:, None] == batch[model.POS_ITEM_ID][None, :]).sum() > len(batch)
        torch.manual_seed(0)
        losses.append(model.calculate_loss(batch)[1].item())
    assert losses[0] != pytest.approx(losses[1])


def test_index_is_rebuilt_when_the_training_data_change(tmp_path):
    _, model, train_data, *_ = build("DuoRec", tmp_path, **FAST)
    feat = train_data._dataset.inter_feat
    old_index = model.same_target.index
    # the data change under the model: targets rotated
    feat.update(type(feat)({model.POS_ITEM_ID: feat[model.POS_ITEM_ID].roll(1)}))
    batch = next(iter(train_data))
    _, _, partner = model.same_target_partners(batch)
    assert model.same_target.index is not old_index
    assert torch.equal(feat[model.POS_ITEM_ID][partner], batch[model.POS_ITEM_ID])


def test_a_batch_from_other_data_is_refused(tmp_path):
    _, model, _, valid_data, _ = build("DuoRec", tmp_path, **FAST)
    batch = next(iter(valid_data))[0]
    with pytest.raises(RuntimeError, match="training data"):
        model.calculate_loss(batch)


@pytest.mark.parametrize("contrast", ["dropout_view_vs_same_target", "dropout_pair", "same_target_pair", "both_pairs"])
def test_each_variant_trains_an_epoch(tmp_path, contrast):
    config, model, train_data, valid_data, _ = build("DuoRec", tmp_path, contrast=contrast, **FAST)
    trainer = Trainer(config, model)
    before = [p.detach().clone() for p in model.parameters()]
    loss = trainer._train_epoch(train_data, 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in loss) and loss[1] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    result = trainer.evaluate(valid_data, load_best_model=False)
    assert 0 <= result["ndcg@10"] <= 1


@pytest.mark.parametrize(
    "old, new",
    [("us_x", "dropout_view_vs_same_target"), ("un", "dropout_pair"), ("su", "same_target_pair"), ("us", "both_pairs")],
)
def test_the_official_codes_names_still_work_with_a_deprecation_line(tmp_path, old, new):
    config, model, *_ = build("DuoRec", tmp_path, contrast=old, **FAST)
    assert config["contrast"] == model.contrast == new
    assert any(f"contrast: '{old}' is a deprecated name, read as '{new}'" in w for w in config.start_warnings)

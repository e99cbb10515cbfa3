"""PluginBERT4Rec is RecBole's BERT4Rec: same parameters, same scores and same loss given the same weights and masks."""

import pytest
import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec
from tiny import build

from recbole_srma.errors import ConfigError
from recbole_srma.model.bert4rec import cloze_mask

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def _pair(tmp_path, **overrides):
    """PluginBERT4Rec and RecBole's BERT4Rec on the tiny data, holding the same weights."""
    config, ours, train_data, valid_data, _ = build("PluginBERT4Rec", tmp_path, **overrides)
    recbole_config, *_ = build("BERT4Rec", tmp_path, **overrides)
    theirs = BERT4Rec(recbole_config, train_data._dataset)
    own = ours.state_dict()
    for name, value in theirs.state_dict().items():
        key = name if name.startswith("output_") else f"backbone.{name}"
        assert own[key].shape == value.shape, name
        own[key] = value
    ours.load_state_dict(own)
    return config, ours, theirs, train_data, valid_data


def _recbole_fields(theirs, item_seq, masked_seq, targets):
    """The fields RecBole's mask_itemseq transform would have produced for these masks (targets front-padded)."""
    width = int(theirs.mask_ratio * theirs.max_seq_length)
    pos_items = torch.zeros(len(item_seq), width, dtype=torch.long)
    index = torch.zeros(len(item_seq), width, dtype=torch.long)
    for row in range(len(item_seq)):
        where = targets[row].nonzero().squeeze(1)
        assert len(where) <= width
        if len(where):
            index[row, -len(where):] = where
            pos_items[row, -len(where):] = item_seq[row, where]
    return {
        theirs.MASK_ITEM_SEQ: masked_seq,
        theirs.POS_ITEMS: pos_items,
        theirs.NEG_ITEMS: torch.ones_like(pos_items),
        theirs.MASK_INDEX: index,
    }


def test_parameter_names_and_shapes_match_recbole(tmp_path):
    _, ours, theirs, *_ = _pair(tmp_path)
    names = {n if n.startswith("output_") else f"backbone.{n}" for n in theirs.state_dict()}
    assert names == set(ours.state_dict())


@pytest.mark.parametrize("fast_path", [True, False])
def test_scores_equal_recbole_bert4rec_with_same_weights(tmp_path, fast_path):
    _, ours, theirs, _, valid_data = _pair(tmp_path)
    ours.backbone.set_fast_path(fast_path)
    ours.eval(), theirs.eval()
    interaction = next(iter(valid_data))[0]
    assert (interaction[ours.ITEM_SEQ_LEN] < ours.max_seq_length).any()  # covers the dropped first item
    with torch.no_grad():
        mine, recbole = ours.full_sort_predict(interaction), theirs.full_sort_predict(interaction)
        torch.testing.assert_close(mine, recbole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.predict(interaction), theirs.predict(interaction), rtol=1e-5, atol=1e-5)
        ours.output_bias.add_(torch.randn_like(ours.output_bias))  # the bias is really used
        assert not torch.allclose(ours.full_sort_predict(interaction), recbole, atol=1e-3)


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("fast_path", [True, False])
def test_loss_and_gradients_equal_recbole_for_the_same_masks(tmp_path, fast_path, last_only):
    _, ours, theirs, train_data, _ = _pair(tmp_path, **NO_DROPOUT)
    ours.backbone.set_fast_path(fast_path)
    interaction = next(iter(train_data))
    item_seq, lengths = interaction[ours.ITEM_SEQ], interaction[ours.ITEM_SEQ_LEN]
    torch.manual_seed(3)
    ours.ft_ratio = 1.0 if last_only else 0.0
    masked_seq, targets = ours.cloze(item_seq, lengths)
    assert targets.sum() > 0
    interaction.update(type(interaction)(_recbole_fields(theirs, item_seq, masked_seq, targets)))
    mine = ours.cloze_loss(item_seq, lengths, masked_seq, targets)
    recbole = theirs.calculate_loss(interaction)
    torch.testing.assert_close(mine, recbole, rtol=1e-5, atol=1e-6)
    mine.backward(), recbole.backward()
    theirs_grads = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        other = theirs_grads[name.removeprefix("backbone.")].grad
        torch.testing.assert_close(param.grad, other, rtol=1e-4, atol=1e-6, msg=name)


def test_training_masks_follow_recbole(tmp_path):
    _, model, train_data, *_ = build("PluginBERT4Rec", tmp_path, mask_ratio=0.3, MAX_ITEM_LIST_LENGTH=10)
    interaction = next(iter(train_data))
    item_seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    stored = item_seq.clone()
    pos = torch.arange(item_seq.size(1))[None, :]
    model.ft_ratio = 1.0  # only the last item, except where that is position 0
    masked, targets = model.cloze(item_seq, lengths)
    assert torch.equal(targets, (pos == lengths[:, None] - 1) & (pos > 0))
    assert torch.equal(masked[targets], torch.full_like(item_seq[targets], model.mask_token))
    model.ft_ratio = 0.0
    torch.manual_seed(0)
    masked, targets = model.cloze(item_seq, lengths)
    was_masked = masked == model.mask_token
    assert torch.equal(item_seq, stored)  # the stored training data are never written
    assert torch.equal(masked[~was_masked], item_seq[~was_masked])
    assert not (was_masked & (pos >= lengths[:, None])).any()  # padding is never masked
    assert (targets & ~was_masked).sum() == 0 and not targets[:, 0].any()
    assert targets.sum(1).max() <= model.max_targets == 3  # int(0.3 * 10)
    rate = was_masked.sum() / lengths.sum()
    assert 0.2 < rate < 0.4


def test_cloze_mask_rates_and_target_cap(tmp_path):
    seq = torch.arange(1, 201).view(4, 50)
    lengths = torch.tensor([50, 20, 5, 1])
    seq[torch.arange(50)[None, :] >= lengths[:, None]] = 0
    masked, targets = cloze_mask(seq, lengths, 0.0, 999)
    assert torch.equal(masked, seq) and not targets.any()
    masked, targets = cloze_mask(seq, lengths, 1.0, 999, max_targets=3)
    assert torch.equal(masked == 999, seq != 0)
    assert targets.sum(1).tolist() == [3, 3, 3, 1]
    assert torch.equal(targets[0].nonzero().squeeze(1), torch.tensor([47, 48, 49]))  # the last ones
    with pytest.raises(ConfigError):  # the rate is checked once, when the Config is built
        build("PluginBERT4Rec", tmp_path, mask_ratio=1.5)


def test_trains_on_tiny_data_and_bad_rates_are_refused(tmp_path):
    from tiny import tiny_config

    from recbole_srma.quick_start import run_recbole_srma

    result = run_recbole_srma(model="PluginBERT4Rec", config_dict=tiny_config(tmp_path, epochs=2))
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10"} and result["epochs_trained"] == 2
    with pytest.raises(ConfigError, match="mask_ratio"):
        build("PluginBERT4Rec", tmp_path, mask_ratio=1.5)

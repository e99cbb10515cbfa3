"""The next-item objectives (issue 49, first part): every position of one sequence per user, and sampled softmax."""

import pytest
import torch
import torch.nn.functional as F
from tiny import build, tiny_config

from recbole_srma.errors import ConfigError
from recbole_srma.quick_start import run_recbole_srma

FAST = {"hidden_size": 16, "inner_size": 32}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def test_every_position_trains_on_one_sequence_per_user_and_leaves_the_data_alone(tmp_path):
    config, model, prefixes, *_ = build("PluginSASRec", tmp_path, **FAST)
    _, _, per_user, *_ = build("PluginSASRec", tmp_path, train_objective="every_position", **FAST)
    feat, ours = prefixes._dataset.inter_feat, per_user._dataset.inter_feat
    uid, seq, length, target = config["USER_ID_FIELD"], model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.POS_ITEM_ID
    users = feat[uid].unique()
    assert sorted(ours[uid].tolist()) == sorted(users.tolist())  # one sample per user
    for user in users[:40].tolist():
        rows = (feat[uid] == user).nonzero().squeeze(1)
        longest = rows[-1]  # RecBole's last prefix of the user: the whole training sequence
        mine = (ours[uid] == user).nonzero().item()
        assert ours[length][mine] == feat[length][longest] == feat[length][rows].max()
        assert torch.equal(ours[seq][mine], feat[seq][longest]) and ours[target][mine] == feat[target][longest]
    assert len(feat) == len(prefixes._dataset.inter_feat) > len(ours)  # RecBole's samples unchanged


@pytest.mark.parametrize("fast_path", [True, False])
def test_every_position_loss_is_the_mean_next_item_cross_entropy_over_every_real_position(tmp_path, fast_path):
    _, model, train_data, *_ = build(
        "PluginSASRec", tmp_path, train_objective="every_position", fast_path=fast_path, **FAST, **NO_DROPOUT
    )
    batch = next(iter(train_data))
    seq, length, pos = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID]
    hidden = model.backbone.encode(seq)  # the padded reference: every position
    logits, targets = [], []
    for row in range(len(seq)):
        n = int(length[row])
        logits.append(hidden[row, :n] @ model.item_weights().t())
        targets.append(torch.cat([seq[row, 1:n], pos[row : row + 1]]))  # the next item; the sample's target last
    expected = F.cross_entropy(torch.cat(logits), torch.cat(targets))
    torch.testing.assert_close(model.calculate_loss(batch), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings", [{"train_objective": "every_position"}, {"next_item_loss": "sampled_softmax"},
                                      {"train_objective": "every_position", "next_item_loss": "sampled_softmax"}])
def test_pluginsasrec_trains_with_each_objective(tmp_path, settings):
    result = run_recbole_srma(model="PluginSASRec", config_dict=tiny_config(tmp_path, **FAST, epochs=2, **settings))
    assert result["epochs_trained"] == 2 and 0 < result["test_result"]["ndcg@10"] <= 1


@pytest.mark.parametrize("model", ["SRMA", "CoSeRec", "DuoRec", "MCLRec", "BT4SRec", "PluginBERT4Rec"])
def test_every_model_trains_on_every_position_and_leaves_the_data_alone(tmp_path, model):
    settings = {"bt_positive": "both"} if model == "BT4SRec" else {}
    unit = {"complement_type": "none"} if model == "SRMA" else {}  # the run below pre-trains the complement
    _, net, train_data, *_ = build(model, tmp_path, train_objective="every_position", **FAST, **settings, **unit)
    stored = train_data._dataset.inter_feat[net.ITEM_SEQ].clone()
    batch = next(iter(train_data))
    seq = batch[net.ITEM_SEQ].clone()
    net.train()
    loss = net.calculate_loss(batch)
    terms = loss if isinstance(loss, tuple) else (loss,)
    assert all(torch.isfinite(t) for t in terms) and (len(terms) == 1 or terms[1] > 0)  # the SSL term is there
    sum(terms).backward()
    assert torch.equal(batch[net.ITEM_SEQ], seq) and torch.equal(train_data._dataset.inter_feat[net.ITEM_SEQ], stored)
    config = tiny_config(tmp_path, **FAST, train_objective="every_position", complement_epochs=1, **settings)
    if model != "SRMA":
        config.pop("complement_epochs")
    result = run_recbole_srma(model=model, config_dict=config)
    assert result["epochs_trained"] == 1 and 0 < result["test_result"]["ndcg@10"] <= 1


def test_the_next_item_loss_of_every_ssl_model_covers_every_position(tmp_path):
    """SRMA: all K layer-dropping blocks at every position; DuoRec / BT4SRec: the base class's helper."""
    for model, extra in (("SRMA", {"complement_type": "none"}), ("DuoRec", {}), ("BT4SRec", {})):
        _, net, train_data, *_ = build(
            model, tmp_path, train_objective="every_position", **FAST, **NO_DROPOUT, **extra
        )
        batch = next(iter(train_data))
        seq, length, pos = batch[net.ITEM_SEQ], batch[net.ITEM_SEQ_LEN], batch[net.POS_ITEM_ID]
        net.eval()
        with torch.no_grad():
            (hidden, targets), last, _ = net.next_item_and_extra(batch)
            assert len(hidden) == len(targets) == int(length.sum())
            torch.testing.assert_close(last, net.forward(seq, length), rtol=1e-4, atol=1e-5)  # the whole sequence
            if model == "SRMA":
                padded = net.layer_drop(net.backbone.encode(seq))
                real = torch.arange(seq.size(1))[None, :] < length[:, None]
                torch.testing.assert_close(hidden, padded[real], rtol=1e-4, atol=1e-5)
        assert torch.equal(targets[length.cumsum(0) - 1], pos)


def test_duorec_on_every_position_pairs_whole_sequences_with_the_same_last_item(tmp_path):
    _, model, train_data, *_ = build("DuoRec", tmp_path, train_objective="every_position", **FAST)
    batch = next(iter(train_data))
    partner_seq, partner_len, rows = model.same_target_partners(batch)
    feat = train_data._dataset.inter_feat
    assert torch.equal(feat[model.POS_ITEM_ID][rows], batch[model.POS_ITEM_ID])  # same target
    assert len(feat) == len(feat[train_data._dataset.uid_field].unique())  # partners are whole user sequences


def test_bert4rec_on_every_position_masks_the_whole_training_sequence(tmp_path):
    _, model, train_data, *_ = build("PluginBERT4Rec", tmp_path, train_objective="every_position", **FAST)
    seq = torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8]])
    whole, length = model.whole_sequence(seq, torch.tensor([2, 4]), torch.tensor([9, 10]))
    assert whole.tolist() == [[3, 4, 9, 0], [6, 7, 8, 10]] and length.tolist() == [3, 4]
    torch.manual_seed(0)
    model.ft_ratio = 0.0  # the cloze draw, not the batch-level last-item-only draw
    _, targets = model.cloze(whole.repeat(200, 1), length.repeat(200), first_position=True)
    assert targets[:, 0].any() and targets[0::2, 2].any()  # the first item and the appended last one are targets


def test_coserec_similarity_reads_the_same_items_from_prefixes_or_whole_sequences(tmp_path):
    from recbole_srma.model import similarity

    window = {"MAX_ITEM_LIST_LENGTH": 40}  # longer than every tiny sequence: nothing is cut
    _, model, prefixes, *_ = build("CoSeRec", tmp_path, **FAST, **window)
    _, _, per_user, *_ = build("CoSeRec", tmp_path, train_objective="every_position", **FAST, **window)
    pairs = []
    for data in (prefixes, per_user):
        users, items = similarity.training_pairs(data._dataset, model.ITEM_SEQ, "user_id", model.ITEM_ID)
        pairs.append(set(zip(users.tolist(), items.tolist())))
    assert pairs[0] == pairs[1]


def test_sampled_softmax_reaches_every_model_but_bert4rec(tmp_path):
    _, model, train_data, *_ = build("CL4SRec", tmp_path, next_item_loss="sampled_softmax", n_negatives=8, **FAST)
    rec, _ = model.calculate_loss(next(iter(train_data)))
    assert torch.isfinite(rec) and rec < 4  # log(9) = 2.2 at chance, against log(n_items) = 4.4 for the full softmax
    with pytest.raises(ConfigError, match="next_item_loss"):
        build("PluginBERT4Rec", tmp_path, next_item_loss="sampled_softmax", **FAST)
    with pytest.raises(ConfigError, match="next_item_loss"):
        build("PluginSASRec", tmp_path, next_item_loss="negatives", **FAST)


def test_cl4srec_on_every_position_contrasts_two_views_of_the_whole_sequence(tmp_path):
    from recbole_srma.model.losses import info_nce

    _, model, train_data, *_ = build("CL4SRec", tmp_path, train_objective="every_position", **FAST, **NO_DROPOUT)
    batch = next(iter(train_data))
    seq, length, pos = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID]
    stored = seq.clone()
    torch.manual_seed(4)
    rec, cl = model.calculate_loss(batch)
    torch.manual_seed(4)
    (s1, l1), (s2, l2) = model.data_augmentation.views(seq, length)
    with torch.no_grad():
        z1, z2 = model.forward(s1, l1), model.forward(s2, l2)
        expected_rec = model.rec_loss(*model.every_position(seq, length, pos))
    torch.testing.assert_close(rec.detach(), expected_rec, rtol=1e-5, atol=1e-6)
    expected_cl = model.cl_lambda * info_nce(z1, z2, temperature=model.tau, similarity=model.sim)
    torch.testing.assert_close(cl.detach(), expected_cl, rtol=1e-5, atol=1e-6)
    assert not torch.equal(s1, seq) and torch.equal(seq, stored)  # the views change the sequence, never the data
    settings = tiny_config(tmp_path, **FAST, train_objective="every_position")
    result = run_recbole_srma(model="CL4SRec", config_dict=settings)
    assert result["epochs_trained"] == 1 and 0 < result["test_result"]["ndcg@10"] <= 1

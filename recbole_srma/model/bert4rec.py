"""PluginBERT4Rec: RecBole's BERT4Rec (Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019) on the plugin's backbone and fast path.

It is RecBole 1.2.1's ``BERT4Rec`` with the CE loss: same parameters (the backbone's under ``backbone.``, the output
head ``output_ffn``, ``output_ln`` and ``output_bias`` under RecBole's names), same scores given the same weights
(tests/test_bert4rec.py), same training task, computed with less work. It is the report's BERT4Rec row, as
PluginSASRec is its SASRec row; ``--model=BERT4Rec`` still runs RecBole's own class.

What RecBole's class does, and so does this one:
- training: every training sequence (RecBole's prefixes, the next item excluded) is masked at each real position
  independently with probability ``mask_ratio``, or, for a whole batch with probability ``ft_ratio``, at its last
  real position only; masked positions get the mask token (id ``n_items``); the loss is the full-softmax
  cross-entropy at the masked positions, averaged over them, of ``output_ln(gelu(output_ffn(h))) @ E^T + b``, with
  at most ``int(mask_ratio * MAX_ITEM_LIST_LENGTH)`` positions per sequence, the last ones (earlier masked positions
  stay masked in the input but are not predicted), and never position 0 (RecBole tells its padded target slots
  by the index 0, so a masked first item is masked in the input but not predicted);
- scoring: the mask token is appended after the last item and the first column dropped (so the oldest item goes
  even when the history is shorter than ``MAX_ITEM_LIST_LENGTH``), then the mask position is scored the same way.

How it differs from RecBole's class, none of which changes the model or its training distribution:
- the masks are drawn inside ``calculate_loss`` by :func:`cloze_mask`, vectorised and from
  torch's RNG, instead of by RecBole's ``mask_itemseq`` transform (a Python loop, Python's ``random``) in the data
  loader, so the draws differ from RecBole's for the same seed; the negative items that transform also draws are
  unused by the CE loss and not drawn;
- on the fast path the encoder runs on the real tokens only, and the logits are computed for the predicted positions
  only (RecBole computes them for ``int(mask_ratio * MAX_ITEM_LIST_LENGTH)`` slots per sequence, mostly padding);
- a batch with no position to predict contributes a zero loss (RecBole divides 0 by 0).

With ``train_objective: every_position`` the sample is the user's whole training sequence, its last training item
appended to the history, and the cloze task masks any of its positions (the first included), as in the paper.

Deviations from the paper (RecBole's, kept for parity): with prefix samples the last training item of each user is
never a masked target; the first item is dropped at scoring time (above); the encoder's dropout defaults are
RecBole's (0.2), not the paper's per-dataset settings.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_srma import hparams
from recbole_srma.compat import gelu
from recbole_srma.errors import ConfigError
from recbole_srma.model.recommender import SequentialBackboneRecommender


def cloze_mask(item_seq, item_seq_len, mask_ratio, mask_token, last_only=False, max_targets=None, generator=None):
    """BERT4Rec's cloze task: ``(masked_seq, targets)``, not a view (the length is unchanged and not returned).

    Each real position is replaced by ``mask_token`` independently with probability ``mask_ratio`` (the number per
    row is random, possibly 0), or, with ``last_only``, exactly the last real position is. ``targets`` (bool
    ``[B, L]``) marks the positions whose item the model must predict: the masked ones, or only the last
    ``max_targets`` masked positions of each row when that is given (RecBole's ``MaskItemSequence`` keeps that many;
    the earlier ones stay masked in the input but are not predicted). ``mask_ratio`` is checked when the Config is
    built (``mask_ratio`` in ``PluginBERT4Rec.HPARAMS``).
    """
    lengths = item_seq_len.to(torch.long)
    pos = torch.arange(item_seq.shape[1], device=item_seq.device).unsqueeze(0)
    if last_only:
        chosen = pos == (lengths - 1).unsqueeze(1)
    else:
        draws = torch.rand(item_seq.shape, generator=generator, device=item_seq.device)
        chosen = (pos < lengths.unsqueeze(1)) & (draws < mask_ratio)
    masked = torch.where(chosen, torch.full_like(item_seq, int(mask_token)), item_seq)
    targets = chosen
    if max_targets is not None:
        at_or_after = chosen.flip(1).cumsum(1).flip(1)  # masked positions from t to the end of the row
        targets = chosen & (at_or_after <= max_targets)
    return masked, targets


class PluginBERT4Rec(SequentialBackboneRecommender):
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "mask_ratio": hparams.rate,
        "ft_ratio": hparams.rate,
    }

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        if config["next_item_loss"] != "full_softmax":
            raise ConfigError(
                "PluginBERT4Rec: its cloze loss is a full softmax with an output bias; next_item_loss "
                f"'{config['next_item_loss']}' is not available for it (use next_item_loss: full_softmax)"
            )

    def __init__(self, config, dataset):
        super().__init__(config, dataset, bidirectional=True)
        self.mask_ratio = config["mask_ratio"]
        self.ft_ratio = config["ft_ratio"]
        self.max_targets = int(self.mask_ratio * self.max_seq_length)  # RecBole's mask_item_length
        hidden_size = config["hidden_size"]
        self.output_ffn = nn.Linear(hidden_size, hidden_size)
        self.output_ln = nn.LayerNorm(hidden_size, eps=config["layer_norm_eps"])
        self.output_bias = nn.Parameter(torch.zeros(self.n_items))
        self.output_ffn.apply(self.backbone._init_weights)
        self.output_ln.apply(self.backbone._init_weights)

    def head(self, hidden):
        """RecBole's output transform of a hidden state before it is scored against the item embeddings."""
        return self.output_ln(gelu(self.output_ffn(hidden)))

    def cloze(self, item_seq, item_seq_len, generator=None, first_position=False):
        """One training draw: ``(masked_seq, targets)`` (see :func:`cloze_mask`); ``first_position``: position 0
        may be a target (every-position training; RecBole's prefixes never predict it)."""
        last_only = bool(torch.rand((), generator=generator, device=item_seq.device) < self.ft_ratio)
        masked_seq, targets = cloze_mask(
            item_seq, item_seq_len, self.mask_ratio, self.mask_token, last_only, self.max_targets, generator
        )
        # RecBole marks its padded target slots with index 0, so a target at position 0 never counts (module doc)
        if not first_position:
            targets = targets & (torch.arange(targets.size(1), device=targets.device) > 0)
        return masked_seq, targets

    def encode_targets(self, masked_seq, item_seq_len, targets):
        """Hidden states at the ``targets`` positions, ``[M, H]`` in row-major order (as ``seq[targets]``)."""
        if self.backbone.fast_path:
            hidden, layout = self.backbone.encode_packed(masked_seq, item_seq_len)
            return hidden[layout.gather(targets[:, : layout.max_len, None]).squeeze(1)]
        return self.backbone.encode(masked_seq)[targets]

    def cloze_loss(self, item_seq, item_seq_len, masked_seq, targets):
        """Mean cross-entropy of the original items at the ``targets`` positions of ``masked_seq``."""
        labels = item_seq[targets]
        if labels.numel() == 0:
            return self.output_bias.sum() * 0.0
        logits = self.head(self.encode_targets(masked_seq, item_seq_len, targets)) @ self.item_weights().t()
        return F.cross_entropy(logits + self.output_bias, labels)

    @staticmethod
    def whole_sequence(item_seq, item_seq_len, pos_items):
        """The sample's history with its target appended (the oldest item dropped when the history already fills
        the ``MAX_ITEM_LIST_LENGTH`` columns): ``(seq, len)``."""
        padded = torch.cat([item_seq, item_seq.new_zeros(item_seq.size(0), 1)], dim=1)
        padded = padded.scatter(1, item_seq_len.to(torch.long).unsqueeze(1), pos_items.unsqueeze(1))
        full = item_seq_len >= item_seq.size(1)
        return torch.where(full[:, None], padded[:, 1:], padded[:, :-1]), (item_seq_len + 1).clamp_max(item_seq.size(1))

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        every_position = self.train_objective == "every_position"
        if every_position:  # the cloze task on the user's whole training sequence, its last item included
            item_seq, item_seq_len = self.whole_sequence(item_seq, item_seq_len, interaction[self.POS_ITEM_ID])
        masked_seq, targets = self.cloze(item_seq, item_seq_len, first_position=every_position)
        return self.cloze_loss(item_seq, item_seq_len, masked_seq, targets)

    def append_mask(self, item_seq, item_seq_len):
        """RecBole's ``reconstruct_test_data``: the mask token after the last item, the first column dropped."""
        padded = torch.cat([item_seq, item_seq.new_zeros(item_seq.size(0), 1)], dim=1)
        padded = padded.scatter(1, item_seq_len.to(torch.long).unsqueeze(1), self.mask_token)
        return padded[:, 1:]

    def forward(self, item_seq, item_seq_len):
        """The transformed hidden state at the appended mask token, [B, H]."""
        return self.head(self.backbone(self.append_mask(item_seq, item_seq_len), item_seq_len))

    def predict(self, interaction):
        item = interaction[self.ITEM_ID]
        return super().predict(interaction) + self.output_bias[item]

    def full_sort_predict(self, interaction):
        return super().full_sort_predict(interaction) + self.output_bias

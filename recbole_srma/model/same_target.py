"""Same-target sequences: for a training row, another training row whose target item is the same.

DuoRec (Qiu et al., WSDM 2022) uses such a sequence as its supervised positive; BT4SRec can use it as the positive
of its Barlow Twins term (as BT-SR does). One implementation for both:

- :class:`SameTargetIndex`: for each training row, the other rows with the same target, built with a stable sort
  (vectorised) and sampled uniformly, never the row itself unless it is alone with its target;
- :class:`SameTargetSampler`: ties the index to RecBole's training data. It numbers the training rows (a column it
  adds to the training dataset); every call checks that the batch's rows still hold the targets the index was built
  from, rebuilds the index from the dataset when they do not, and fails with a clear error if that does not help,
  so the index is never stale (the official DuoRec code caches it in a file that is not keyed by the data).
"""

import numpy as np
import torch
from recbole.data.interaction import Interaction

ROW_FIELD = "same_target_row_id"


class SameTargetIndex:
    """For each training row, the other rows with the same target item (vectorised sampling)."""

    def __init__(self, targets):
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.targets = targets
        order = torch.argsort(targets, stable=True)
        sorted_targets = targets[order]
        start = torch.searchsorted(sorted_targets, targets, right=False)
        end = torch.searchsorted(sorted_targets, targets, right=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        self.order, self.start, self.count, self.rank = order, start, end - start, rank - start

    def __len__(self):
        return len(self.targets)

    def sample(self, rows, generator=None):
        """A uniformly drawn row with the same target as each of ``rows``, never the row itself unless it is alone."""
        rows = rows.cpu()
        count = self.count[rows]
        others = (count - 1).clamp_min(1)
        draw = (torch.rand(len(rows), generator=generator, dtype=torch.float64) * others).long().clamp_max(others - 1)
        draw = draw + (draw >= self.rank[rows]).long()  # skip the row itself
        partner = self.order[(self.start[rows] + draw).clamp_max(len(self) - 1)]
        return torch.where(count > 1, partner, rows)


class SameTargetSampler:
    """Same-target partners for batches of one training dataset (see the module docstring).

    ``owner`` names the model in error messages.
    """

    def __init__(self, dataset, item_seq_field, item_seq_len_field, target_field, owner="the model"):
        self.dataset = dataset
        self.fields = (item_seq_field, item_seq_len_field, target_field)
        self.owner = owner
        self.rebuild()

    def rebuild(self):
        """(Re)build the index from the training dataset and (re)number its rows."""
        feat = self.dataset.inter_feat
        feat.update(Interaction({ROW_FIELD: torch.arange(len(feat))}))
        item_seq, item_seq_len, target = self.fields
        self.index = SameTargetIndex(feat[target])
        self.sequences = (feat[item_seq], feat[item_seq_len])

    def rows(self, interaction):
        """The batch's training-row ids, after checking (and if needed rebuilding) the index against the data."""
        targets = interaction[self.fields[2]].cpu()
        for attempt in range(2):
            rows = interaction[ROW_FIELD].cpu() if ROW_FIELD in interaction else None
            if rows is not None and int(rows.max()) < len(self.index) and torch.equal(
                self.index.targets[rows], targets
            ):
                return rows
            if attempt == 0:
                self.rebuild()
                if ROW_FIELD not in interaction:
                    break
        raise RuntimeError(
            f"{self.owner}: this batch does not come from the training data the model was built with (its rows do "
            f"not match the same-target index). Train {self.owner} with the training loader of the dataset passed "
            "to it."
        )

    def partners(self, interaction, generator=None):
        """``(seq, seq_len, partner_rows)``: a random other training row with the same target for each batch row."""
        rows = self.rows(interaction)  # first: it may rebuild the index
        partner = self.index.sample(rows, generator=generator)
        seqs, lengths = self.sequences
        device = interaction[self.fields[0]].device
        return seqs[partner].to(device), lengths[partner].to(device), partner

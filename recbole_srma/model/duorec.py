"""DuoRec: Qiu et al., "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation", WSDM 2022.

Two positive views of a training sequence, no data augmentation:
- unsupervised: the same sequence encoded again (dropout differs between the passes);
- supervised: another training sequence with the same target item, drawn at random at every step (the sequence
  itself when no other has that target).

``contrast`` picks the loss (the official code's names):

====== =================================================================================
us_x   the paper's model: ``sem_lambda * InfoNCE(second pass, same-target sequence)``
un     unsupervised only: ``cl_lambda * InfoNCE(first pass, second pass)``
su     supervised only: ``sem_lambda * InfoNCE(first pass, same-target sequence)``
us     both: the ``un`` term plus the ``su`` term
====== =================================================================================

each added to the full-softmax next-item loss of the first pass. All passes of a batch go through the encoder in
one call. ``false_negative_masking: True`` removes sequences with the same target from each other's negatives
(off by default, as in the paper and its code, where same-target sequences of a batch stay negatives).

The same-target index is built from RecBole's training data with vectorised operations (a stable sort by target).
It identifies training rows by a row-id column it adds to the training dataset; every step checks that the batch's
rows still hold the targets the index was built from, rebuilds the index from the dataset when they do not, and
fails with a clear error if that does not help (so it is never stale).

Deviations from the official code: the partner is drawn uniformly among the *other* rows with the same target
(the code precomputes one partner list per epoch from its own cache file, which is not keyed by the data and goes
stale when the data change); the next-item loss is the package's full softmax (the paper's too).
"""

import numpy as np
import torch

from recbole.data.interaction import Interaction

from recbole_srma import hparams
from recbole_srma.model.backbone import SequentialBackboneRecommender
from recbole_srma.model.losses import SIMILARITIES, info_nce

ROW_FIELD = "duorec_row_id"
CONTRASTS = ("us_x", "un", "su", "us")


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


class DuoRec(SequentialBackboneRecommender):
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "contrast": hparams.one_of(*CONTRASTS),
        "cl_lambda": hparams.non_negative,
        "sem_lambda": hparams.non_negative,
        "tau": hparams.positive,
        "sim": hparams.one_of(*SIMILARITIES),
        "false_negative_masking": hparams.boolean,
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.contrast = config["contrast"]
        self.cl_lambda = config["cl_lambda"]
        self.sem_lambda = config["sem_lambda"]
        self.tau = config["tau"]
        self.sim = config["sim"]
        self.false_negative_masking = config["false_negative_masking"]
        self._train_dataset = dataset
        self._build_index()

    def _build_index(self):
        """(Re)build the same-target index from the training dataset and (re)number its rows."""
        feat = self._train_dataset.inter_feat
        feat.update(Interaction({ROW_FIELD: torch.arange(len(feat))}))
        self.same_target = SameTargetIndex(feat[self.POS_ITEM_ID])
        self._sequences = (feat[self.ITEM_SEQ], feat[self.ITEM_SEQ_LEN])

    def _rows(self, interaction):
        """The batch's training-row ids, after checking (and if needed rebuilding) the index against the data."""
        targets = interaction[self.POS_ITEM_ID].cpu()
        for attempt in range(2):
            rows = interaction[ROW_FIELD].cpu() if ROW_FIELD in interaction else None
            if rows is not None and int(rows.max()) < len(self.same_target) and torch.equal(
                self.same_target.targets[rows], targets
            ):
                return rows
            if attempt == 0:
                self._build_index()
                if ROW_FIELD not in interaction:
                    break
        raise RuntimeError(
            "DuoRec: this batch does not come from the training data the model was built with (its rows do not "
            "match the same-target index). Train DuoRec with the training loader of the dataset passed to it."
        )

    def same_target_partners(self, interaction):
        """Sequences and lengths of a random other training row with the same target, for each row of the batch."""
        rows = self._rows(interaction)  # first: it may rebuild the index
        partner = self.same_target.sample(rows)
        seqs, lengths = self._sequences
        device = interaction[self.ITEM_SEQ].device
        return seqs[partner].to(device), lengths[partner].to(device), partner

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        seqs, lens = [item_seq], [item_seq_len]
        if self.contrast in ("un", "us", "us_x"):
            seqs.append(item_seq), lens.append(item_seq_len)
        if self.contrast in ("su", "us", "us_x"):
            partner_seq, partner_len, _ = self.same_target_partners(interaction)
            seqs.append(partner_seq), lens.append(partner_len)
        hidden = self.forward(torch.cat(seqs), torch.cat(lens)).chunk(len(seqs))
        seq_output = hidden[0]
        rec_loss = self.rec_loss(seq_output, target)

        mask = (target[:, None] == target[None, :]) if self.false_negative_masking else None
        args = {"temperature": self.tau, "similarity": self.sim, "false_negative_mask": mask}
        if self.contrast == "us_x":
            cl_loss = self.sem_lambda * info_nce(hidden[1], hidden[2], **args)
        elif self.contrast == "un":
            cl_loss = self.cl_lambda * info_nce(seq_output, hidden[1], **args)
        elif self.contrast == "su":
            cl_loss = self.sem_lambda * info_nce(seq_output, hidden[1], **args)
        else:
            cl_loss = self.cl_lambda * info_nce(seq_output, hidden[1], **args) + self.sem_lambda * info_nce(
                seq_output, hidden[2], **args
            )
        return rec_loss, cl_loss

"""DuoRec: Qiu et al., "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation", WSDM 2022.

Two positive views of a training sequence, no data augmentation:
- unsupervised: the same sequence encoded again (dropout differs between the passes);
- supervised: another training sequence with the same target item, drawn at random at every step (the sequence
  itself when no other has that target).

``contrast`` picks the loss (the official code's names, still accepted, in brackets):

=========================== ============================================================================
dropout_view_vs_same_target the paper's model: ``sem_lambda * InfoNCE(second pass, same-target sequence)``
                            (``us_x``)
dropout_pair                unsupervised only: ``cl_lambda * InfoNCE(first pass, second pass)`` (``un``)
same_target_pair            supervised only: ``sem_lambda * InfoNCE(first pass, same-target sequence)``
                            (``su``)
both_pairs                  both: the ``dropout_pair`` term plus the ``same_target_pair`` term (``us``)
=========================== ============================================================================

each added to the next-item loss of the first pass. All passes of a batch go through the encoder in one call.

With ``train_objective: every_position`` a sample is a user's whole training sequence and its target the user's
last training item: the next-item loss covers every position of the first pass, the contrasted representation is
the sequence's last position (as with prefixes), its dropout view is the whole sequence encoded again, and its
same-target partner is another user's whole sequence with the same last training item (the partner's target is
the sample's, as with prefixes; fewer sequences share one, so more rows fall back to themselves: docs/models.md).
The extra passes then take a second encoder call.

``false_negative_masking: True`` removes sequences with the same target from each other's negatives (off by
default, as in the paper and its code, where same-target sequences of a batch stay negatives).

The same-target partners come from :class:`~recbole_srma.model.same_target.SameTargetSampler` (shared with
BT4SRec): an index built from RecBole's training data with a stable sort by target, checked against every batch and
rebuilt when the data changed, so it is never stale.

Deviations from the official code: the partner is drawn uniformly among the *other* rows with the same target
(the code precomputes one partner list per epoch from its own cache file, which is not keyed by the data and goes
stale when the data change); the next-item loss is the package's full softmax (the paper's too).
"""

from recbole_srma import hparams
from recbole_srma.model.losses import SIMILARITIES, info_nce
from recbole_srma.model.recommender import SequentialBackboneRecommender
from recbole_srma.model.same_target import SameTargetSampler

CONTRASTS = ("dropout_view_vs_same_target", "dropout_pair", "same_target_pair", "both_pairs")
# which extra encoder passes each contrast needs
_SECOND_PASS = ("dropout_view_vs_same_target", "dropout_pair", "both_pairs")
_SAME_TARGET = ("dropout_view_vs_same_target", "same_target_pair", "both_pairs")


class DuoRec(SequentialBackboneRecommender):
    HPARAMS = {
        **SequentialBackboneRecommender.HPARAMS,
        "contrast": hparams.one_of(*CONTRASTS),
        "cl_lambda": hparams.non_negative,
        "sem_lambda": hparams.non_negative,
        "tau": hparams.temperature,
        "sim": hparams.one_of(*SIMILARITIES, what="similarity"),
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
        self.same_target = SameTargetSampler(
            dataset, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.POS_ITEM_ID, owner=type(self).__name__
        )

    def same_target_partners(self, interaction):
        """Sequences and lengths of a random other training row with the same target, for each row of the batch."""
        return self.same_target.partners(interaction)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        extra = []
        if self.contrast in _SECOND_PASS:
            extra.append((item_seq, item_seq_len))
        if self.contrast in _SAME_TARGET:
            partner_seq, partner_len, _ = self.same_target_partners(interaction)
            extra.append((partner_seq, partner_len))
        next_item, seq_output, others = self.next_item_and_extra(interaction, extra)
        hidden = [seq_output, *others]
        rec_loss = self.rec_loss(*next_item)

        mask = (target[:, None] == target[None, :]) if self.false_negative_masking else None
        args = {"temperature": self.tau, "similarity": self.sim, "false_negative_mask": mask}
        if self.contrast == "dropout_view_vs_same_target":
            cl_loss = self.sem_lambda * info_nce(hidden[1], hidden[2], **args)
        elif self.contrast == "dropout_pair":
            cl_loss = self.cl_lambda * info_nce(seq_output, hidden[1], **args)
        elif self.contrast == "same_target_pair":
            cl_loss = self.sem_lambda * info_nce(seq_output, hidden[1], **args)
        else:
            cl_loss = self.cl_lambda * info_nce(seq_output, hidden[1], **args) + self.sem_lambda * info_nce(
                seq_output, hidden[2], **args
            )
        return rec_loss, cl_loss

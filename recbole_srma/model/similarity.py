"""Item similarity for CoSeRec's insert and substitute operators (Liu et al. 2021, "Contrastive Self-supervised
Sequential Recommendation with Robust Augmentation").

Offline similarity: item-based collaborative filtering with inverse user frequency (ItemCF-IUF) over the training
split only::

    sim(i, j) = sum over users u who have both i and j of 1 / log(1 + |I_u|)  /  sqrt(N_i * N_j)

with ``I_u`` the distinct training items of user ``u`` and ``N_i`` the number of users who have item ``i`` (CoSeRec's
definition; its code counts each user's items as a set). As matrices: ``R`` the binary user x item matrix,
``W_u = 1 / log(1 + |I_u|)``, ``C = R^T diag(W_u) R`` without its diagonal, ``sim = D^-1/2 C D^-1/2`` with
``D = diag(N)``: two sparse products (scipy), no loop over pairs.

Online similarity (after CoSeRec's warm-up): the dot product of the current item embeddings, computed in chunks.
Both are normalised to [0, 1] by their global minimum and maximum, and the hybrid keeps, per item, the candidate
with the higher normalised score (offline on ties), as CoSeRec does.

Deviations from CoSeRec's code: ties between neighbours are broken by the smaller item id (the code's order is
that of a dict); an item with no co-occurring item keeps itself (the code draws a random item); the code's training
items are each user's sequence without its last three items, here every item of the training split (all but the
last two of each user, the training targets included); the online score's minimum and maximum are taken over real
items only (the code includes the padding and mask rows).
"""

import hashlib
import os
import time

import numpy as np
import scipy.sparse as sp
import torch

from recbole_srma.fileio import atomic_open

CACHE_FORMAT = "recbole_srma/item_cf_iuf/1"


def training_pairs(dataset, item_seq_field, uid_field, iid_field):
    """(users, items) of every training interaction of a RecBole sequential training dataset.

    Each row is (history, target); a user's items are the union of the histories and targets of its rows, which
    covers its training items whether the rows are RecBole's prefixes or one whole sequence per user
    (``train_objective: every_position``; there, items older than ``MAX_ITEM_LIST_LENGTH`` are not in the row).
    Pairs may repeat; :func:`item_cf_iuf` counts each user's items as a set.
    """
    feat = dataset.inter_feat
    users = feat[uid_field].numpy()
    seqs = feat[item_seq_field].numpy()
    real = seqs > 0
    history_users = np.broadcast_to(users[:, None], seqs.shape)[real]
    return np.concatenate([users, history_users]), np.concatenate([feat[iid_field].numpy(), seqs[real]])


def item_cf_iuf(users, items, n_users, n_items):
    """ItemCF-IUF similarity of every item pair, a scipy CSR ``[n_items, n_items]`` with an empty diagonal."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    R = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
    R.sum_duplicates()
    R.data[:] = 1.0  # a user's items as a set
    per_user = np.diff(R.indptr)
    weight = np.zeros(n_users)
    has = per_user > 0
    weight[has] = 1.0 / np.log1p(per_user[has])
    C = (R.T @ sp.diags(weight) @ R).tocsr()
    C.setdiag(0.0)
    C.eliminate_zeros()
    per_item = np.asarray(R.sum(axis=0)).ravel()
    scale = np.zeros(n_items)
    scale[per_item > 0] = 1.0 / np.sqrt(per_item[per_item > 0])
    W = (sp.diags(scale) @ C @ sp.diags(scale)).tocsr()
    W.sort_indices()
    return W


def top_k(W, k):
    """The ``k`` highest-scoring neighbours of every row of a CSR matrix: (ids ``[n, k]``, scores ``[n, k]``).

    Missing neighbours are id -1 with score NaN. Ties go to the smaller column id.
    """
    W = W.tocsr()
    n = W.shape[0]
    rows = np.repeat(np.arange(n), np.diff(W.indptr))
    order = np.lexsort((W.indices, -W.data, rows))  # by row, then score descending, then column
    rank = np.arange(len(order)) - W.indptr[rows[order]]
    keep = rank < k
    ids = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), np.nan)
    ids[rows[order][keep], rank[keep]] = W.indices[order][keep]
    scores[rows[order][keep], rank[keep]] = W.data[order][keep]
    return ids, scores


def _normalise(scores, low, high):
    return (scores - low) / (high - low) if high > low else np.where(np.isnan(scores), scores, 1.0)


def offline_top1(dataset, item_seq_field, uid_field, iid_field, cache_dir=None, name="dataset"):
    """Top-1 ItemCF-IUF neighbour and its normalised score for every item id, cached by the data it came from.

    Returns ``(neighbour [n_items] int64, score [n_items] float64, info)``; ``info`` says where it came from and how
    long it took. The cache file's name is a hash of the training pairs and the item count, so other data (another
    split, another dataset with the same name) never reads a stale file.
    """
    start = time.perf_counter()
    users, items = training_pairs(dataset, item_seq_field, uid_field, iid_field)
    n_users, n_items = dataset.user_num, dataset.item_num
    digest = hashlib.sha256()
    for array in (users, items, np.array([n_users, n_items])):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    key = digest.hexdigest()[:16]
    path = os.path.join(cache_dir, f"{name}-{key}.npz") if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["format"]) == CACHE_FORMAT and str(saved["key"]) == key:
                info = {"source": path, "seconds": time.perf_counter() - start, "cached": True}
                return saved["neighbour"], saved["score"], info
    W = item_cf_iuf(users, items, n_users, n_items)
    ids, scores = top_k(W, 1)
    low, high = (W.data.min(), W.data.max()) if W.nnz else (0.0, 1.0)
    neighbour, score = ids[:, 0], _normalise(scores[:, 0], low, high)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_open(path) as handle:
            np.savez(handle, format=CACHE_FORMAT, key=key, neighbour=neighbour, score=score)
    info = {"source": "computed", "seconds": time.perf_counter() - start, "cached": False, "nnz": int(W.nnz)}
    return neighbour, score, info


@torch.no_grad()
def embedding_top1(weight, chunk=2048):
    """Top-1 neighbour by dot product of item embeddings ``[n, H]`` (row 0, padding, is neither scored nor chosen),
    with scores normalised by the global min / max over all real pairs. Returns (ids ``[n]``, scores ``[n]``)."""
    real = weight[1:]
    n = real.size(0)
    best_score = torch.empty(n, device=weight.device)
    best_id = torch.empty(n, dtype=torch.long, device=weight.device)
    low, high = float("inf"), float("-inf")
    for start in range(0, n, chunk):
        block = real[start : start + chunk] @ real.t()
        low, high = min(low, block.min().item()), max(high, block.max().item())
        rows = torch.arange(block.size(0), device=weight.device)
        block[rows, rows + start] = float("-inf")  # never the item itself
        score, index = block.max(dim=1)
        best_score[start : start + chunk], best_id[start : start + chunk] = score, index + 1
    span = high - low if high > low else 1.0
    ids = torch.cat([torch.zeros(1, dtype=torch.long, device=weight.device), best_id])
    scores = torch.cat([torch.full((1,), float("nan"), device=weight.device), (best_score - low) / span])
    return ids, scores


def hybrid_table(offline_id, offline_score, online_id=None, online_score=None, extra_rows=1):
    """The most similar item of every id as a LongTensor lookup table.

    Offline only, or per item the candidate with the higher normalised score (offline on ties; an item without an
    offline neighbour counts as score 0, as in CoSeRec's code). Padding 0 maps to 0; an item without any neighbour
    maps to itself; ``extra_rows`` ids past the items (the mask token) map to themselves.
    """
    offline_id = torch.as_tensor(offline_id, dtype=torch.long)
    n = offline_id.numel()
    identity = torch.arange(n + extra_rows)
    table = identity.clone()
    has = offline_id >= 0
    table[:n][has] = offline_id[has]
    if online_id is not None:
        off = torch.nan_to_num(torch.as_tensor(offline_score, dtype=torch.float64), nan=0.0)
        on = online_score.detach().cpu().to(torch.float64)
        use_online = on > off
        use_online[0] = False
        table[:n][use_online] = online_id.detach().cpu()[use_online]
    table[0] = 0
    return table


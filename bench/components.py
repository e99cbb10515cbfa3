"""Micro-benchmarks of the pieces the fast path changes, at the sizes of one Sports batch: each line times two ways
of computing the same thing in one process (bench/README.md, docs/performance.md)."""

import common
import torch
import torch.nn.functional as F

from recbole_srma.model.encoder import Dropout, SASRecBackbone


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    def pair(name, reference, fast, repeats=args.repeats):
        rows.append((name, common.best_time(reference, repeats) * 1e3, common.best_time(fast, repeats) * 1e3))

    rows, (B, L, H, heads) = [], (256, 50, 64, 2)
    padded = torch.randn(B * L, H)
    slow_drop, fast_drop = Dropout(0.5), Dropout(0.5)
    fast_drop.fast = True
    pair("dropout mask, [12800, 64]", lambda: slow_drop(padded), lambda: fast_drop(padded))

    q = torch.randn(B, heads, L, H // heads)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    additive = torch.zeros(L, L).masked_fill(~causal, torch.finfo(torch.float32).min)

    def explicit():
        scores = torch.matmul(q, q.transpose(-1, -2)) * (H // heads) ** -0.5 + additive
        return torch.matmul(fast_drop(scores.softmax(-1)), q)

    pair("attention with dropout 0.5, [256, 2, 50, 50]",
         lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=causal, dropout_p=0.5), explicit)

    # Sports-like lengths: most sequences short, one at the maximum (as in nearly every random batch).
    lengths = torch.clamp(torch.distributions.Geometric(probs=0.12).sample((B,)).long() + 3, max=L)
    lengths[0] = L
    seq = torch.randint(1, 18000, (B, L))
    seq[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    net = SASRecBackbone(18000, L).train()

    def step(fast):
        net.set_fast_path(fast)
        net(seq, lengths).sum().backward()

    pair(f"encoder forward + backward, 256 sequences, {int(lengths.sum())} real of {B * L} tokens",
         lambda: step(False), lambda: step(True), max(3, args.repeats // 3))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}\n")
    print("| what | reference (ms) | fast path (ms) | ratio |\n|---|---:|---:|---:|")
    for name, ref, fast in rows:
        print(f"| {name} | {ref:.2f} | {fast:.2f} | {ref / fast:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

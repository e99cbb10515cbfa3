"""Micro-benchmarks of the pieces the fast path changes, at the sizes of one Sports batch (docs/performance.md).

    python bench/components.py [--threads 2] [--repeats 30]

Each line compares two ways of computing the same thing in the same process and prints both times and the ratio:
dropout masks (``bernoulli_`` as ``nn.Dropout`` draws them vs. ``uniform >= p``), attention with dropout
(``scaled_dot_product_attention`` vs. the explicit product with the cheaper mask), and the work of one encoder pass
with and without padding (a batch of 256 Sports sequences padded to 50 vs. its real tokens).
"""

import argparse
import time

import torch
import torch.nn.functional as F


def best_ms(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from recbole_srma.model.backbone import Dropout, SASRecBackbone

    B, L, H, heads = 256, 50, 64, 2
    padded = torch.randn(B * L, H)
    slow_drop, fast_drop = Dropout(0.5), Dropout(0.5)
    fast_drop.fast = True
    rows = [("dropout mask, [12800, 64]", best_ms(lambda: slow_drop(padded), args.repeats),
             best_ms(lambda: fast_drop(padded), args.repeats))]

    q = torch.randn(B, heads, L, H // heads)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    additive = torch.zeros(L, L).masked_fill(~causal, torch.finfo(torch.float32).min)

    def explicit():
        scores = torch.matmul(q, q.transpose(-1, -2)) * (H // heads) ** -0.5 + additive
        return torch.matmul(fast_drop(scores.softmax(-1)), q)

    rows.append(("attention with dropout 0.5, [256, 2, 50, 50]",
                 best_ms(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=causal, dropout_p=0.5),
                         args.repeats),
                 best_ms(explicit, args.repeats)))

    # Sports-like lengths: most sequences short, one at the maximum (as in nearly every random batch).
    lengths = torch.clamp(torch.distributions.Geometric(probs=0.12).sample((B,)).long() + 3, max=L)
    lengths[0] = L
    seq = torch.randint(1, 18000, (B, L))
    seq[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    net = SASRecBackbone(18000, L).train()

    def step(fast):
        net.set_fast_path(fast)
        net(seq, lengths).sum().backward()

    rows.append((f"encoder forward + backward, 256 sequences, {int(lengths.sum())} real of {B * L} tokens",
                 best_ms(lambda: step(False), max(3, args.repeats // 3)),
                 best_ms(lambda: step(True), max(3, args.repeats // 3))))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}\n")
    print("| what | reference (ms) | fast path (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name, ref, fast in rows:
        print(f"| {name} | {ref:.2f} | {fast:.2f} | {ref / fast:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the full-size model, run it on random features, print its parameter count, output shapes and
eager CPU latency (median of many runs at B=1, Lv=75, Lt=32)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from coreba import Coreba, CorebaConfig
from coreba.interface import INPUT_NAMES, make_feeds


@torch.inference_mode()
def measure_latency(model: torch.nn.Module, inputs: tuple, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        model(*inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(*inputs)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--backend", default="sdpa", choices=["math", "sdpa"])
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = CorebaConfig(attention_backend=args.backend)
    model = Coreba(cfg).eval()
    feeds = make_feeds(cfg, (cfg.max_video_len,), (cfg.max_text_len,))
    inputs = tuple(torch.from_numpy(feeds[name]) for name in INPUT_NAMES)
    with torch.inference_mode():
        out = model(*inputs)
    print(f"COREBA (N_b={cfg.num_balance_tokens}, N_r={cfg.num_recurrent}, d={cfg.hidden_dim}): "
          f"{model.num_parameters():,} parameters")
    for name, value in out.items():
        print(f"  {name:16s} {tuple(value.shape)}")
    times = measure_latency(model, inputs, args.runs)
    print(f"eager CPU latency, B=1 Lv={cfg.max_video_len} Lt={cfg.max_text_len}, {args.backend} attention, "
          f"{torch.get_num_threads()} threads: median {statistics.median(times):.2f} ms over {args.runs} runs "
          f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()

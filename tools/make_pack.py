"""Cut the training cache and pairs file to a pack that travels to a rented GPU (albumfix.train.pack).

    python tools/make_pack.py [--cache cache/train-s128.npz] [--pairs cache/pairs-s128.npz]
                              [--out carry] [--budget-mib 60]

`make gpu-pack` runs it; `make train-gpu` trains on the pack (see the README, "Training").
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from albumfix.train.pack import make_pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/train-s128.npz"))
    parser.add_argument("--pairs", type=Path, default=Path("cache/pairs-s128.npz"),
                        help="made-as-inference pairs of the cache; a missing file packs none")
    parser.add_argument("--out", type=Path, default=Path("carry"))
    parser.add_argument("--budget-mib", type=float, default=60.0)
    args = parser.parse_args()
    report = make_pack(args.cache, args.out, args.pairs if args.pairs.exists() else None, args.budget_mib)
    for key, value in asdict(report).items():
        print(f"{key:<12} {value}")


if __name__ == "__main__":
    main()

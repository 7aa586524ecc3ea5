"""Run under torchrun by test_fit.py: a few DDP steps, then each rank saves its weights.

Each rank gets its own --out (run_rank<R>) so the test can check that only rank 0
wrote anything; the weights each rank ends with go to weights_rank<R>.pt.
"""
import os
import sys
from pathlib import Path

import torch

from train.fit import FitOptions, fit


def main() -> None:
    data, vectors, unseen, folder = sys.argv[1:5]
    rank = int(os.environ["RANK"])
    result = fit(FitOptions(data=data, out=str(Path(folder) / f"run_rank{rank}"), vectors=vectors, split=unseen,
                            backbone="test_resnet", pretrained="none", k=2, image_size=32, epochs=1, batch_size=4,
                            steps_per_epoch=3, lr=1e-3, workers=0, device="cpu", progress=False, val_fraction=0.2))
    torch.save({k: v.detach().clone() for k, v in result.model.state_dict().items()},
               Path(folder) / f"weights_rank{rank}.pt")


if __name__ == "__main__":
    main()

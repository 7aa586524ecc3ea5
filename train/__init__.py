"""train: SDL training (full fine-tuning or head-only) and ZSL/GZSL evaluation.

    python -m train fit --data photos/ --unseen unseen.txt --head-only --out run/
    python -m train evaluate --checkpoint run/best.safetensors --data test/

Checkpoints are ``sdl_core`` files: ``sdl_core.Tagger.from_pretrained("run/best.safetensors")``.
"""
from .loss import LossOutput, sdl_loss
from .metrics import average_precision, evaluate_zsl_gzsl, mean_average_precision, precision_recall_f1_at_k

__all__ = ["LossOutput", "average_precision", "evaluate_zsl_gzsl", "mean_average_precision",
           "precision_recall_f1_at_k", "sdl_loss"]

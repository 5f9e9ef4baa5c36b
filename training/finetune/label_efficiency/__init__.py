"""The paper's label-efficiency protocol (Fig. 2/3): Dice vs. fraction of labelled data,
MAE-pretrained initialisation vs. random initialisation, several seeds, paired tests.

    python -m training.label_efficiency --quick --out docs --work le_work --threads 1
    python -m training.label_efficiency --out study/ --device cuda          # the full preset
    python -m training.label_efficiency --init mae_ckpt/ --train-csv train.csv \\
        --test-csv test.csv --num-classes 5 --out study/

Per dataset (``phantoms``: hard synthetic CT phantoms; ``mni152``: the MNI152 T1 template
with grey/white-matter labels, split in contiguous blocks so train and test cannot leak)
one MAE is pretrained (:mod:`.pretraining`: per-sample augmentation, the input-use check)
and shared by every seed and fraction. For each seed, nested label subsets
(:func:`training.data.splits.label_fraction_subsets`) are fine-tuned from each arm with
the same steps, order and augmentation; the best epoch by validation Dice is scored on a
fixed test set (:mod:`.study`). :mod:`.report` writes the CSV, mean ± std, paired tests
against random init and the plot. Modules: ``config`` (presets, arms), ``data``,
``pretraining``, ``study``, ``report``, ``cli``.
"""
from training.finetune.label_efficiency.cli import build_parser, main
from training.finetune.label_efficiency.config import (
    FRACTIONS,
    FULL,
    QUICK,
    RECIPES,
    StudyConfig,
)
from training.finetune.label_efficiency.pretraining import pretrain_quick
from training.finetune.label_efficiency.report import paired_tests, plot, summarize
from training.finetune.label_efficiency.study import run_study

__all__ = ["FRACTIONS", "FULL", "QUICK", "RECIPES", "StudyConfig", "build_parser", "main",
           "paired_tests", "plot", "pretrain_quick", "run_study", "summarize"]

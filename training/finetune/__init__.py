"""Fine-tuning and evaluation: the training engine, losses, metrics, evaluation, the
label-efficiency study and the CLI."""

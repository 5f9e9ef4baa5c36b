"""Model weights on disk: our checkpoint format, model cards, official .pth files, weight
transfer, the model store and versions."""

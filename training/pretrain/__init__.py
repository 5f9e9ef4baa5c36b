"""MAE pretraining: prepare shards, the data pipeline, exact resume and the training loop
(``python -m training.pretrain``)."""

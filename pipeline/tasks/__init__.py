"""LightningModules: pretraining and fine-tuning tasks."""

"""Pretraining, fine-tuning and the baselines: Lightning modules, the trainer, checkpoints and Slurm."""

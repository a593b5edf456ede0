"""asknlearn: Ask-n-Learn (Venkatesh & Thiagarajan, 2020) and its baselines for deep active learning."""

__version__ = "0.1.0"

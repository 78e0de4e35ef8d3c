"""The method: task vectors, TBAR, metrics, the attacks, the baseline defenses, trigger inversion, training."""

"""What every experiment (`walt demo`, `walt study`, `walt bench`) runs on.

    runner    the output folder: the settings check (`check_settings`) and the resumable stage log
              (`StageLog`), the progress printer (`reporter`)
    budget    wall-clock budgets: train to a deadline (`train_to_deadline`) or the steps that fit
    machine   where the numbers were measured (`machine_info`, `machine`)
    recipes   the small-model stages the demo and the studies share: autoencoder, cache, denoiser

The experiments themselves are recipes over these: `walt.demo`, `walt.study`, `walt.bench`.
"""

from walt.experiment.budget import train_to_deadline
from walt.experiment.machine import machine, machine_info
from walt.experiment.runner import SettingsError, StageLog, check_settings, reporter

__all__ = ["StageLog", "SettingsError", "check_settings", "reporter", "train_to_deadline", "machine_info", "machine"]

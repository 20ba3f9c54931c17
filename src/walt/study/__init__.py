"""Studies built on the whole pipeline (SPEC §6 and the paper's Table 3).

    from walt.study import study_config, design_grid, run_encoder_study, get_variants, run_ablation_study
    cfg = study_config("cpu", vae_steps=200, walt_steps=300)
    rows = run_encoder_study(cfg, design_grid("small"), "outputs/study", train_data, eval_data)
    rows = run_ablation_study(cfg, get_variants(), "outputs/ablation", train_data, eval_data)

`walt study encoder` trades the causal autoencoder's design (f_t, f_s, c, causal) against
reconstruction / generation quality and throughput; `walt study ablation` reruns the paper's
Table 3 knobs at small scale. Both write results.csv, report.md and PNG plots, and resume.
"""

from walt.study.ablation import VARIANTS, AblationVariant, get_variants, run_ablation_study
from walt.study.config import STUDY_PRESETS, StudyConfig, study_config
from walt.study.encoder import (
    DEFAULT_DESIGN,
    EncoderDesign,
    design_grid,
    factorial_grid,
    one_factor_grid,
    run_encoder_study,
    small_grid,
)
from walt.study.report import pareto_front, write_study_report
from walt.study.stages import WaltRecipe

__all__ = [
    "StudyConfig", "STUDY_PRESETS", "study_config", "WaltRecipe",
    "EncoderDesign", "DEFAULT_DESIGN", "design_grid", "one_factor_grid", "factorial_grid", "small_grid",
    "run_encoder_study", "AblationVariant", "VARIANTS", "get_variants", "run_ablation_study",
    "pareto_front", "write_study_report",
]

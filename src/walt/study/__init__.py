"""Studies built on the whole pipeline (SPEC §6 and the paper's Table 3).

    from walt.study import study_config, design_grid, run_encoder_study, get_variants, run_ablation_study
    cfg = study_config("cpu")
    summary = run_encoder_study(cfg, design_grid("small"), "outputs/study", jobs=2)
    summary = run_ablation_study(cfg, get_variants(), "outputs/ablation", vae_path=..., jobs=2)

`walt study encoder` trades the causal autoencoder's design (f_t, f_s, c, causal, where time is
compressed) against reconstruction / generation quality and throughput; `walt study ablation`
reruns the paper's Table 3 knobs at small scale; `walt study docs` writes docs/study/README.md
from both. Every quality number carries a 95% bootstrap interval and every difference against
the reference row a paired one; the studies write report.json, results.csv, report.md and
plots, and resume.
"""

from walt.study.ablation import DEFAULT_VARIANTS, VARIANTS, AblationVariant, get_variants, run_ablation_study
from walt.study.study_config import STUDY_PRESETS, StudyConfig, study_config
from walt.study.clip_sets import StudyData, builtin_data, folder_data
from walt.study.docs import write_docs
from walt.study.encoder import (
    DEFAULT_DESIGN,
    PAPER_DESIGN,
    EncoderDesign,
    design_grid,
    factorial_grid,
    one_factor_grid,
    paper_grid,
    run_encoder_study,
    small_grid,
)
from walt.study.plots import pareto_front
from walt.study.stages import WaltRecipe
from walt.study.sweep import RowSpec, StudyInterrupted, planned_minutes

__all__ = [
    "StudyConfig", "STUDY_PRESETS", "study_config", "StudyData", "builtin_data", "folder_data", "WaltRecipe",
    "EncoderDesign", "DEFAULT_DESIGN", "PAPER_DESIGN", "design_grid", "one_factor_grid", "factorial_grid",
    "small_grid", "paper_grid", "run_encoder_study", "AblationVariant", "VARIANTS", "DEFAULT_VARIANTS",
    "get_variants", "run_ablation_study", "RowSpec", "StudyInterrupted", "planned_minutes", "pareto_front",
    "write_docs",
]

"""`walt demo`: the whole W.A.L.T pipeline in miniature, end to end, inside a wall-clock budget.

    from walt.demo import demo_config, run_demo
    summary = run_demo(demo_config("cpu"), "outputs/demo", minutes=15)

Modules: `config` (DemoConfig and its presets), `data` (the demo's clips), `stages` (autoencoder,
cache, denoiser: the recipe over `walt.experiment.recipes`), `fvd` (FVD as the denoiser trains),
`text` (`walt demo --text`: prompts -> videos), `report` (sampling, metrics, files) with `render`
and `plots`, `run` (`run_demo`: the stages in order, resumable). The probes behind the sizes are
in docs/demo/NOTES.md.
"""

from walt.demo.demo_config import PRESETS, DemoConfig, demo_config
from walt.demo.run import DemoError, DemoInterrupted, run_demo

__all__ = ["DemoConfig", "PRESETS", "demo_config", "run_demo", "DemoError", "DemoInterrupted"]

"""`walt demo`: the whole W.A.L.T pipeline in miniature, end to end, inside a wall-clock budget.

    from walt.demo import demo_config, run_demo
    summary = run_demo(demo_config("cpu"), "outputs/demo", minutes=15)

See `walt.demo.run` for the stages and `walt.demo.config` for the sizes and why.
"""

from walt.demo.config import PRESETS, DemoConfig, demo_config
from walt.demo.run import DemoError, run_demo

__all__ = ["DemoConfig", "PRESETS", "demo_config", "run_demo", "DemoError"]

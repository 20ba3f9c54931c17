"""Foundation: strict configs and safe, atomic checkpoints."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from walt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walt.config import ConfigError, config_from_dict, config_to_dict, dump_config, load_config, replace_config


@dataclass(frozen=True)
class Inner:
    width: int = 4
    factors: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 1e-4
    inner: Inner = field(default_factory=Inner)
    window: tuple[int, int, int] = (1, 16, 16)
    rank: int | None = None
    child: Inner | None = None


def test_config_round_trip_json_and_yaml(tmp_path):
    cfg = Outer(name="y", lr=3, inner=Inner(width=8, factors=(1, 2, 4)), rank=2, child=Inner(width=2))
    d = config_to_dict(cfg)
    assert d["window"] == [1, 16, 16]
    back = config_from_dict(Outer, d)
    assert back == cfg and isinstance(back.window, tuple) and isinstance(back.lr, float)
    assert isinstance(back.child, Inner)  # PEP 604 optional of a nested config comes back typed
    for name in ("c.yaml", "c.json"):
        dump_config(cfg, tmp_path / name)
        assert load_config(Outer, tmp_path / name) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'widht'"):
        config_from_dict(Outer, {"inner": {"widht": 3}})
    with pytest.raises(ConfigError, match="'nmae'"):
        replace_config(Outer(), nmae="z")
    with pytest.raises(ConfigError, match="expected int"):
        config_from_dict(Inner, {"width": "wide"})


def test_checkpoint_round_trip_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "config": config_to_dict(Outer()),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        "step": 7,
    }
    save_checkpoint(tmp_path / "ck.safetensors", state)
    back = load_checkpoint(tmp_path / "ck.safetensors")
    assert back["step"] == 7 and back["config"] == state["config"]
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])  # int param ids and tuples survive
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    np.random.set_state(back["rng"]["numpy"])


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.ones(2), "step": 1})
    with pytest.raises(TypeError):  # refused while flattening, before anything is written
        save_checkpoint(path, {"w": torch.zeros(2), "bad": object()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left behind


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """The safetensors write dies half-way (disk full, kill): the old file survives, no temp file remains."""
    import walt.checkpoint as ckpt

    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.ones(1000), "step": 1})
    real_save_file = ckpt.save_file
    written = []

    def partial_then_fail(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])  # a truncated file where the write went
        written.append(Path(filename))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", partial_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"w": torch.zeros(1000), "step": 2})
    assert written and written[0] != path and written[0].parent == tmp_path  # it wrote a temp file, not the target
    back = load_checkpoint(path)
    assert back["step"] == 1 and torch.equal(back["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]
    # Without the atomic rename the truncated bytes would be unreadable: the check above can fail.
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(_truncated_copy(path, tmp_path / "half.safetensors"))


def _truncated_copy(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst

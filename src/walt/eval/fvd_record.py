"""What every FVD number carries with it: the network's identity, the protocol record, the report.

FVD (Unterthiner et al. 2018) depends on the protocol (sample counts, clip length, frame stride,
resize, real split) and on the exact network, so each result stores the protocol's name, its
hash (`FVDProtocol.protocol_hash()`), the fields that differ from the named preset, and the
sha256 of the I3D weights, with `i3d_is_reference` true only for the pinned conversion of the
TF-Hub Kinetics-400 I3D (`walt.eval.i3d_weights.I3D_CONVERTED_SHA256`).

    rec = protocol_record(fvd_protocol("smoke"), i3d_weights_hash(i3d))
    write_report(out_dir, "fvd", result, fvd_markdown(result))
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from walt.config import config_to_dict
from walt.eval.fvd import FVDProtocol, fvd_protocol


def i3d_weights_hash(i3d: Any) -> str:
    """Identity of the feature network: `weights_sha256` of `load_i3d()` (sha256 of the converted
    weights file), else "state-sha256:<hex>" over the module's state dict (names, dtypes, shapes,
    bytes), which marks a network that is *not* the verified FVD I3D."""
    sha = getattr(i3d, "weights_sha256", None)
    if sha:
        return str(sha)
    if not isinstance(i3d, nn.Module):
        raise ValueError("cannot identify the FVD feature network: give it a `weights_sha256` attribute "
                         "(load it with walt.eval.i3d.load_i3d)")
    h = hashlib.sha256()
    for name, t in sorted(i3d.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state-sha256:" + h.hexdigest()


def as_protocol(protocol: FVDProtocol | str) -> FVDProtocol:
    """A preset name or an FVDProtocol -> FVDProtocol (ValueError naming the presets otherwise)."""
    if isinstance(protocol, FVDProtocol):
        return protocol
    if isinstance(protocol, str):
        return fvd_protocol(protocol)
    raise ValueError(f"protocol must be an FVDProtocol or a preset name, got {type(protocol).__name__}")


def protocol_record(protocol: FVDProtocol, i3d_hash: str) -> dict[str, Any]:
    """What a result stores about how it was measured (name, hash, every field, network)."""
    from walt.eval import i3d_weights
    from walt.eval.fvd import FVD_PROTOCOLS

    preset = FVD_PROTOCOLS[protocol.name]() if protocol.name in FVD_PROTOCOLS else None
    overrides = {} if preset is None else {
        k: v for k, v in config_to_dict(protocol).items() if config_to_dict(preset).get(k) != v}
    return {
        "name": protocol.name,
        "hash": protocol.protocol_hash(),
        "overrides": overrides,  # fields that differ from the named preset (also in the hash)
        "config": config_to_dict(protocol),
        "i3d_weights_sha256": i3d_hash,
        # Only the pinned conversion of the TF-Hub weights is the FVD network; anything else
        # (an unverified file, a stand-in module) is recorded, and flagged.
        "i3d_is_reference": i3d_weights.is_reference_sha256(i3d_hash),
    }


def short_hash(h: str, n: int = 16) -> str:
    """'abcdef…' / 'state-sha256:abcdef…': the first n hex digits, keeping a prefix that marks a
    network which is not the reference I3D."""
    prefix, _, hexpart = h.rpartition(":")
    return f"{prefix + ':' if prefix else ''}{hexpart[:n]}…"


def protocol_label(record: dict[str, Any]) -> str:
    """'smoke [hash]' or 'smoke* (num_fake=4, ...) [hash]' for reports."""
    o = record.get("overrides") or {}
    name = record["name"] + ("*" if o else "")
    extra = f" ({', '.join(f'{k}={v}' for k, v in o.items())})" if o else ""
    return f"{name}{extra} [{record['hash']}]"


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """Strict-JSON copy: +-inf -> "inf" / "-inf", NaN -> null (json.dump would write Infinity)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return json_safe(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(out_dir: str | Path, stem: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `stem.json` (strict JSON) and `stem.md` into out_dir, each atomically."""
    from walt.io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / f"{stem}.json", out / f"{stem}.md"
    text = json.dumps(json_safe(result), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(j, lambda tmp: Path(tmp).write_text(text))
    atomic_write(m, lambda tmp: Path(tmp).write_text(markdown))
    return j, m


def fvd_markdown(result: dict[str, Any], title: str = "FVD") -> str:
    """A short Markdown report: the number next to its protocol, weights hash and sample counts."""
    p = result["protocol"]
    val = f"{result['fvd']:.2f}" + (f" ± {result['fvd_std']:.2f}" if result["repeats"] > 1 else "")
    ref = "" if p["i3d_is_reference"] else " (NOT the reference Kinetics-400 I3D)"
    lines = [f"# {title}", "",
             "| metric | value | protocol [hash] | I3D weights sha256 | real clips | generated clips x repeats |",
             "|---|---|---|---|---|---|",
             f"| FVD | {val} | {protocol_label(p)} | `{short_hash(p['i3d_weights_sha256'])}`{ref} | "
             f"{result['num_real']} | {result['num_fake']} x {result['repeats']} |", ""]
    cfg = p["config"]
    lines += [f"Clips: first {cfg['num_frames']} frames, real clips every {cfg.get('frame_stride', 1)} source "
              f"frame(s) from the {cfg['real_split']!r} split, {cfg['resize']} resize to {cfg['resolution']}.", ""]
    if result["repeats"] > 1:
        lines += ["Per repeat: " + ", ".join(f"{v:.2f}" for v in result["fvd_per_repeat"]) +
                  " (± = sample std over repeats).", ""]
    if result.get("seeds"):
        s = result["seeds"]
        lines += [f"Seeds: {s['rule']}, base {s['base']}; ranges {s['per_repeat_range']}.", ""]
    if result.get("labels"):
        lab = result["labels"]
        lines += [f"Class labels: drawn i.i.d. from {lab['drawn_from']} ({lab['pool_size']} values), {lab['rng']}.", ""]
    rs = result["real_stats"]
    lines += [f"Real statistics: key `{rs['key']}` ({'cache hit' if rs['cache_hit'] else 'computed'}).", ""]
    if cfg["num_fake"] < 2048:
        lines += [f"Note: {cfg['num_fake']} generated clips is far below the 2048-10000 of published "
                  "protocols; FVD is biased upwards at small sample counts, so compare only numbers with the "
                  "same protocol hash.", ""]
    return "\n".join(lines)


__all__ = ["as_protocol", "fvd_markdown", "i3d_weights_hash", "json_safe", "protocol_label", "protocol_record",
           "short_hash", "write_report"]

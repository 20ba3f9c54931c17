"""Video IO (PyAV / Pillow), transforms, and the real-video datasets, on clips written to a tmp dir."""

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from walt.data import (
    UCF101,
    ImageFolder,
    SyntheticVideos,
    VideoFolder,
    VideoReadError,
    clip_indices,
    frame_grid,
    read_video,
    resize_center_crop,
    to_uint8_frames,
    validate_num_frames,
    video_info,
    write_frame_grid_png,
    write_gif,
    write_mp4,
    write_video,
)

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "clips"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def _counter_video(num_frames: int, h: int = 32, w: int = 48) -> torch.Tensor:
    """uint8 (3, T, H, W) whose frame i shows a bright bar at column 2 * i: indices are readable back."""
    v = torch.full((3, num_frames, h, w), 30, dtype=torch.uint8)
    for i in range(num_frames):
        v[:, i, :, (2 * i) % (w - 2) : (2 * i) % (w - 2) + 2] = 230
    return v


def _decoded_ids(frames: torch.Tensor, w: int = 48) -> list[int]:
    """Inverse of `_counter_video` for uint8 (T, H, W, 3) frames: the bar's column // 2."""
    return [int(f.float().mean((0, 2)).argmax()) // 2 for f in frames]


# ---------------------------------------------------------------------------- writers / readers


def test_mp4_round_trip(tmp_path):
    video = SyntheticVideos(1, 17, 64, seed=2)[0]["video"]
    path = write_mp4(tmp_path / "clip.mp4", video, fps=8)
    info = video_info(path)
    assert (info.num_frames, info.fps, info.height, info.width) == (17, 8.0, 64, 64)
    assert info.duration == pytest.approx(17 / 8, abs=0.2)
    frames = read_video(path)
    assert frames.shape == (17, 64, 64, 3) and frames.dtype == torch.uint8
    psnr = _psnr(frames, torch.from_numpy(to_uint8_frames(video)))
    assert psnr > 25, f"H.264 round trip PSNR {psnr:.1f} dB"
    as_float = read_video(path, output="float")
    assert as_float.shape == (3, 17, 64, 64) and as_float.min() >= -1 and as_float.max() <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left behind


def test_odd_sizes_are_padded_to_even_and_uint8_layouts_accepted(tmp_path):
    v = _counter_video(5, 31, 45)
    write_mp4(tmp_path / "a.mp4", v, fps=10)
    write_mp4(tmp_path / "b.mp4", v.permute(1, 2, 3, 0), fps=10)  # (T, H, W, 3)
    for name in ("a.mp4", "b.mp4"):
        info = video_info(tmp_path / name)
        assert (info.height, info.width, info.num_frames) == (32, 46, 5)
    with pytest.raises(ValueError, match=".mp4"):
        write_mp4(tmp_path / "c.avi", v)


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mkv"])
def test_read_selected_frames_with_seek_matches_full_decode(tmp_path, ext):
    n = 60
    path = write_video(tmp_path / f"counter{ext}", _counter_video(n), fps=24)
    full = read_video(path)
    assert full.shape[0] >= n and _decoded_ids(full[:n]) == [i % 23 for i in range(n)]
    wanted = [45, 3, 46, 59, 45]  # out of order, repeats, far enough in to seek
    part = read_video(path, indices=wanted)
    assert torch.equal(part, full[wanted])
    # Runs: from a start time, with a stride, or resampled to a target fps.
    assert torch.equal(read_video(path, start_sec=1.0, num_frames=5, frame_stride=3), full[[24, 27, 30, 33, 36]])
    assert torch.equal(read_video(path, start_sec=0.5, num_frames=4, fps=8), full[[12, 15, 18, 21]])
    # Indices past the end repeat the last frame.
    assert torch.equal(read_video(path, indices=[n - 1, n + 5]), full[[n - 1, n - 1]])
    with pytest.raises(ValueError, match="past the end"):
        read_video(path, start_sec=100.0)


def test_read_errors(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoReadError):
        video_info(bad)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(Exception):
        write_video(tmp_path / "x.mp4", _counter_video(3), codec="no_such_codec")
    assert list(tmp_path.iterdir()) == []


def test_gif_and_frame_grid(tmp_path):
    videos = torch.stack([SyntheticVideos(3, 9, 24, seed=1)[i]["video"] for i in range(3)])  # (3, 3, 9, 24, 24)
    gif = write_gif(tmp_path / "clip.gif", videos[0], fps=10)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (24, 24) and im.n_frames == 9
        assert im.info["duration"] == 100
        im.seek(4)
        frame = torch.from_numpy(np.array(im.convert("RGB")))
    assert _psnr(frame, torch.from_numpy(to_uint8_frames(videos[0])[4])) > 25  # per-frame palette is accurate

    png = write_frame_grid_png(tmp_path / "grid.png", videos, max_frames=5, pad=2)
    with Image.open(png) as im:
        assert im.size == (5 * 24 + 6 * 2, 3 * 24 + 4 * 2)
        grid = np.asarray(im.convert("RGB"))
    # Row 2, last column is the last frame of sample 2.
    tile = grid[2 + 2 * 26 : 2 + 2 * 26 + 24, 2 + 4 * 26 : 2 + 4 * 26 + 24]
    assert np.array_equal(tile, to_uint8_frames(videos[2])[-1])
    assert frame_grid(videos[0]).shape == (24 + 4, 9 * 24 + 10 * 2, 3)


# ---------------------------------------------------------------------------- transforms


def test_transforms():
    assert validate_num_frames(17) == 17 and validate_num_frames(1) == 1
    with pytest.raises(ValueError, match=r"1 \+ 4k.*use 13 or 17"):
        validate_num_frames(16)
    with pytest.raises(ValueError):
        validate_num_frames(0)
    v = torch.rand(3, 2, 40, 90) * 2 - 1
    out = resize_center_crop(v, (16, 24))
    assert out.shape == (3, 2, 16, 24)
    assert resize_center_crop(v, 32).shape == (3, 2, 32, 32)
    assert clip_indices(100, 5, frame_stride=2, start="first") == [0, 2, 4, 6, 8]
    assert clip_indices(100, 4, fps=8, source_fps=30, start="first") == [0, 4, 8, 11]
    assert clip_indices(9, 5, frame_stride=2, start="center") == [0, 2, 4, 6, 8]
    assert clip_indices(4, 6, start="first") == [0, 1, 2, 3, 3, 3]  # too short: pad last frame
    assert clip_indices(4, 6, start="first", pad_mode="loop") == [0, 1, 2, 3, 0, 1]
    rng = np.random.default_rng(0)
    starts = {clip_indices(50, 5, frame_stride=3, rng=rng)[0] for _ in range(50)}
    assert len(starts) > 5 and max(starts) <= 50 - 1 - 12


# ---------------------------------------------------------------------------- datasets


def _write_clips(folder: Path, names_and_seeds, ext=".mp4", num_frames=12, res=24):
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in names_and_seeds:
        write_video(folder / f"{name}{ext}", SyntheticVideos(1, num_frames, res, seed=seed)[0]["video"], fps=8)


def test_video_folder_labels_skips_corrupt_file(tmp_path):
    root = tmp_path / "videos"
    _write_clips(root / "JumpRope", [("a", 0), ("b", 1)], ".mp4")
    _write_clips(root / "PlayingCello", [("c", 2)], ".avi")
    (root / "PlayingCello" / "broken.avi").write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.warns(RuntimeWarning, match="broken.avi"):
        ds = VideoFolder(root, num_frames=5, resolution=16, frame_stride=2)
    assert len(ds) == 3 and len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.avi")
    assert ds.class_names == ["JumpRope", "PlayingCello"] and ds.num_classes == 2
    s = ds[2]
    assert s["video"].shape == (3, 5, 16, 16) and s["video"].dtype == torch.float32
    assert s["video"].min() >= -1 and s["video"].max() <= 1
    assert (s["label"], s["caption"]) == (1, "playing cello") and s["path"].endswith("c.avi")
    assert [ds[i]["label"] for i in range(3)] == [0, 0, 1]


def test_unreadable_file_found_at_load_time_is_skipped(tmp_path):
    _write_clips(tmp_path, [("a", 0), ("b", 1)])
    (tmp_path / "a.mp4").write_bytes(b"not a video")  # corrupt after listing, with probing off
    ds = VideoFolder(tmp_path, num_frames=5, resolution=16, labels=False, probe=False)
    with pytest.warns(RuntimeWarning, match="a.mp4"):
        s = ds[0]
    assert s["path"].endswith("b.mp4") and s["label"] == -1 and len(ds.skipped) == 1


def test_empty_or_unreadable_folder_is_a_value_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        VideoFolder(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.avi").write_bytes(b"\x00" * 100)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no readable"):
        VideoFolder(bad)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        VideoFolder(tmp_path, num_frames=8)
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolder(tmp_path / "nope")


def test_csv_list_with_labels_and_captions(tmp_path):
    _write_clips(tmp_path / "clips", [("a", 0), ("b", 1), ("c", 2)])
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "caption"])
        w.writerow(["clips/a.mp4", "dancing", "a person dancing"])
        w.writerow([str(tmp_path / "clips" / "b.mp4"), "abseiling", ""])
        w.writerow(["clips/c.mp4", "dancing", "more dancing"])
    ds = VideoFolder(tmp_path / "list.csv", num_frames=1, resolution=(12, 20))
    assert ds.class_names == ["abseiling", "dancing"]
    got = [(ds[i]["label"], ds[i]["caption"]) for i in range(3)]
    assert got == [(1, "a person dancing"), (0, "abseiling"), (1, "more dancing")]
    assert ds[0]["video"].shape == (3, 1, 12, 20)
    with open(tmp_path / "ints.csv", "w") as f:
        f.write("path,label\nclips/a.mp4,7\nclips/b.mp4,3\n")
    assert [VideoFolder(tmp_path / "ints.csv", 1, 8)[i]["label"] for i in range(2)] == [7, 3]
    (tmp_path / "nopath.csv").write_text("file,label\nclips/a.mp4,1\n")
    with pytest.raises(ValueError, match="'path' column"):
        VideoFolder(tmp_path / "nopath.csv")


def test_clip_sampling_modes_and_short_files(tmp_path):
    write_video(tmp_path / "long.mp4", _counter_video(40), fps=8)
    write_video(tmp_path / "short.mp4", _counter_video(4), fps=8)
    kw = dict(num_frames=5, resolution=(32, 48), frame_stride=2, labels=False)

    def ids(ds, i):
        frames = ((ds[i]["video"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
        return _decoded_ids(frames)

    det = VideoFolder(tmp_path, sampling="deterministic", seed=1, **kw)
    first = ids(det, 0)
    assert ids(det, 0) == first and ids(VideoFolder(tmp_path, sampling="deterministic", seed=1, **kw), 0) == first
    assert [(b - a) % 23 for a, b in zip(first, first[1:])] == [2, 2, 2, 2]  # stride 2 (bar wraps at 23)
    epochs = set()
    for e in range(8):
        det.set_epoch(e)
        epochs.add(ids(det, 0)[0])
    assert len(epochs) > 1  # a new epoch draws new clip starts
    center = VideoFolder(tmp_path, sampling="center", **kw)
    assert ids(center, 0) == [15, 17, 19, 21, 0]  # 40 frames, span 8 -> frames 15..23 (bar wraps at 23)
    assert ids(center, 1) == [0, 2, 3, 3, 3]  # 4 frames: the last frame repeats
    loop = VideoFolder(tmp_path, sampling="center", pad_mode="loop", **kw)
    assert ids(loop, 1) == [0, 2, 0, 2, 0]
    with pytest.warns(RuntimeWarning, match="too short"):
        skip = VideoFolder(tmp_path, skip_short=True, **kw)
    assert len(skip) == 1 and skip.skipped[0][1].startswith("too short")
    with pytest.raises(ValueError, match="frame_stride or fps"):
        VideoFolder(tmp_path, frame_stride=2, fps=4)


def test_ucf101_layout_splits_and_class_index(tmp_path):
    root = tmp_path / "ucf"
    videos = root / "UCF-101"
    for cls, spelled, seed in (("ApplyEyeMakeup", "ApplyEyeMakeup", 0), ("HandstandPushups", "HandStandPushups", 2)):
        names = [(f"v_{spelled}_g01_c01", seed), (f"v_{spelled}_g08_c01", seed + 1)]
        _write_clips(videos / cls, names, ".avi", 6)
    (videos / "HandstandPushups" / "v_HandStandPushups_g09_c01.avi").write_bytes(b"junk" * 100)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n")
    # The official lists spell the folder "HandStandPushups": matched case-insensitively.
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandStandPushups/v_HandStandPushups_g08_c01.avi 2\n"
        "HandStandPushups/v_HandStandPushups_g09_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nHandStandPushups/v_HandStandPushups_g01_c01.avi\n"
    )
    with pytest.warns(RuntimeWarning, match="g09"):
        train = UCF101(root, "train", num_frames=5, resolution=16)
    test = UCF101(root, "test", num_frames=5, resolution=16, sampling="center")
    assert len(train) == 2 and len(train.skipped) == 1 and len(test) == 2
    assert all("g08" in train[i]["path"] for i in range(2)) and all("g01" in test[i]["path"] for i in range(2))
    assert train.class_names == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [test[i]["label"] for i in range(2)] == [0, 1]
    assert test[1]["caption"] == "handstand pushups"
    assert test[0]["video"].shape == (3, 5, 16, 16)
    with pytest.raises(ValueError, match="fold"):
        UCF101(root, fold=4)
    with pytest.raises(ValueError, match="split"):
        UCF101(root, split="val")


def test_ucf101_without_split_files_uses_all_files_and_folder_classes(tmp_path):
    _write_clips(tmp_path / "Biking", [("v_Biking_g01_c01", 0)], ".avi", 5)
    _write_clips(tmp_path / "Archery", [("v_Archery_g01_c01", 1)], ".avi", 5)
    with pytest.warns(RuntimeWarning, match="trainlist01"):
        ds = UCF101(tmp_path, num_frames=5, resolution=8)
    assert ds.class_names == ["Archery", "Biking"] and len(ds) == 2
    assert [ds[i]["label"] for i in range(2)] == [0, 1]


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        ds = ImageFolder(tmp_path, resolution=16)
    assert len(ds) == 4 and len(ds.skipped) == 1 and ds.class_names == ["cats", "dogs"]
    s = ds[3]
    assert s["video"].shape == (3, 1, 16, 16) and s["label"] == 1 and s["caption"] == "dogs"
    assert s["video"].min() >= -1 and s["video"].max() <= 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(empty)


def test_dataloader_collates_folder_samples(tmp_path):
    _write_clips(tmp_path, [("a", 0), ("b", 1)])
    ds = VideoFolder(tmp_path, num_frames=5, resolution=16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["video"].shape == (2, 3, 5, 16, 16) and len(batch["path"]) == 2


# ---------------------------------------------------------------------------- real clips


@pytest.mark.skipif(not (CLIPS / "intel-sample-videos" / "asl_gestures").is_dir(), reason="../shared/clips not present")
def test_real_intel_asl_clip():
    path = CLIPS / "intel-sample-videos" / "asl_gestures" / "thanks.mkv"
    info = video_info(path)
    assert (info.width, info.height, info.fps) == (640, 480, 30.0) and 45 <= info.num_frames <= 55
    frames = read_video(path, start_sec=0.5, num_frames=9, frame_stride=2)
    assert frames.shape == (9, 480, 640, 3) and frames.float().std() > 10  # real content, not padding
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every Intel clip decodes
        ds = VideoFolder(path.parent, num_frames=9, resolution=32, frame_stride=2, labels=False, sampling="center")
    assert len(ds) == len(list(path.parent.glob("*.mkv"))) >= 20 and not ds.skipped
    v = ds[0]["video"]
    assert v.shape == (3, 9, 32, 32) and (v[:, 1:] - v[:, :-1]).abs().mean() > 1e-3  # the signer moves

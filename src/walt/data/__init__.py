"""Data: the built-in procedural dataset (and a plainer, faster variant), reading videos (PyAV), real video
folders, latent caches.

All datasets return dicts `{"video": (3, T, H, W) float in [-1, 1], "label": int,
"caption": str, "index": int}` (folder datasets add "path"); images are 1-frame videos.
"""

from walt.data.folders import IMAGE_EXTENSIONS, UCF101, VIDEO_EXTENSIONS, ImageFolder, VideoFolder, humanize
from walt.data.restricted import RestrictedVideos
from walt.data.synthetic import SyntheticImages, SyntheticVideos
from walt.data.synthetic_scene import CLASS_NAMES, ClipParams, caption_for, render_clip, sample_clip_params
from walt.data.transforms import (
    center_crop,
    clip_indices,
    parse_resolution,
    resize_center_crop,
    resize_short_side,
    to_float_video,
    validate_num_frames,
)
from walt.data.video_io import VideoInfo, VideoReadError, read_image, read_video, video_info
from walt.io import frame_grid, to_uint8_frames, write_frame_grid_png, write_gif, write_mp4, write_video

__all__ = [
    "CLASS_NAMES", "ClipParams", "SyntheticImages", "SyntheticVideos", "RestrictedVideos", "caption_for", "render_clip",
    "sample_clip_params", "UCF101", "VideoFolder", "ImageFolder", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS",
    "humanize", "center_crop", "clip_indices", "parse_resolution", "resize_center_crop", "resize_short_side",
    "to_float_video", "to_uint8_frames", "validate_num_frames", "VideoInfo", "VideoReadError", "frame_grid",
    "read_image", "read_video", "video_info", "write_frame_grid_png", "write_gif", "write_mp4", "write_video",
]

"""Thumbnails for hover, and figures as self-contained HTML (plotly.js inlined, no CDN)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from plotly.basedatatypes import BaseFigure

from hcl.atomic import write_text_atomic

__all__ = ["THUMBNAIL_META", "image_getter", "save_html", "thumbnail_uri", "thumbnail_uris", "to_html"]

# A figure whose layout.meta holds this key gets the thumbnail-on-hover script in to_html.
THUMBNAIL_META = "hcl_thumbnails"
# Shows a sample's thumbnail (customdata[1], a data: URI) next to the cursor on hover; plotly
# hover labels cannot hold images. "{plot_id}" is filled in by plotly.io.to_html.
_THUMBNAIL_SCRIPT = """
/* hcl: thumbnail on hover */
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  var img = document.createElement('img');
  img.style.cssText = 'position:fixed;display:none;pointer-events:none;width:84px;height:84px;' +
    'image-rendering:pixelated;border:1px solid #888;background:#fff;z-index:1000';
  document.body.appendChild(img);
  gd.on('plotly_hover', function (ev) {
    var p = ev.points[0];
    var uri = p.customdata && p.customdata[1];
    if (!uri) { img.style.display = 'none'; return; }
    img.src = uri;
    img.style.left = (ev.event.clientX + 18) + 'px';
    img.style.top = (ev.event.clientY + 18) + 'px';
    img.style.display = 'block';
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
})();
"""


def image_getter(images: Any, n: int) -> Callable[[int], Any]:
    """A function ``i -> PIL.Image`` over sample rows 0..n-1, from any supported image source.

    Args:
        images: an array (N, H, W) or (N, H, W, C) (uint8, or floats in [0, 1]), a sequence of
            PIL images or arrays, or a callable ``i -> PIL.Image``.
        n: the number of samples (checked against a sequence's length).

    Shape:
        images: (N, H, W) or (N, H, W, C) when an array.
    """
    from PIL import Image

    if callable(images):
        return images
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(f"an image array must be (N, H, W) or (N, H, W, C), got {images.shape}")
        if images.dtype.kind == "f":
            images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
    if len(images) != n:
        raise ValueError(f"got {len(images)} images for {n} points")
    seq = images

    def get(i: int) -> Any:
        item = seq[i]
        return Image.fromarray(np.asarray(item, dtype=np.uint8)) if isinstance(item, np.ndarray) else item

    return get


def thumbnail_uri(image: Any, size: int = 48) -> str:
    """A PNG data URI of a thumbnail of ``image`` (a PIL image), at most ``size`` pixels a side."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uris(images: Any, n: int, size: int = 48) -> list[str]:
    """PNG data URIs of thumbnails, one per sample, for hover display (see :func:`image_getter`)."""
    get = image_getter(images, n)
    return [thumbnail_uri(get(i), size) for i in range(n)]


def to_html(fig: BaseFigure, *, include_plotlyjs: bool = True, full_html: bool = True) -> str:
    """A figure as HTML, with the thumbnail-on-hover script when the figure carries thumbnails.

    ``include_plotlyjs=True`` inlines plotly.js (no CDN); ``False`` leaves it to the page.
    """
    meta = fig.layout.meta
    script = _THUMBNAIL_SCRIPT if isinstance(meta, Mapping) and meta.get(THUMBNAIL_META) else None
    return fig.to_html(
        include_plotlyjs=include_plotlyjs, full_html=full_html, post_script=script, config={"responsive": True}
    )


def save_html(fig: BaseFigure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as one self-contained HTML file (plotly.js inlined), atomically.

    Returns:
        The path written.
    """
    if not isinstance(fig, BaseFigure):
        raise TypeError(f"fig must be a plotly figure, got {type(fig).__name__}")
    return write_text_atomic(path, to_html(fig))

"""Independent float64 references written as plain loops: the CARAFE op (straight from CONTRACT §1) and mmcv's RoIAlign.

Shares no code with carafe_deploy: it is what the package is checked against.
"""

from __future__ import annotations

import math

import numpy as np


def carafe_reference(features, kernels, kernel_size: int, group: int, scale_factor: int, mode: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    kern = np.asarray(kernels, dtype=np.float64)
    n, c, h, w = x.shape
    s, k, r = scale_factor, kernel_size, kernel_size // 2
    if mode == "up":
        ho, wo = h * s, w * s
    else:
        ho, wo = math.ceil(h / s), math.ceil(w / s)
    cg = c // group
    out = np.zeros((n, c, ho, wo))
    for b in range(n):
        for oi in range(ho):
            for oj in range(wo):
                i, j = (oi // s, oj // s) if mode == "up" else (oi * s, oj * s)
                for g in range(group):
                    acc = np.zeros(cg)
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            y, xx = i + dy, j + dx
                            if 0 <= y < h and 0 <= xx < w:
                                weight = kern[b, g * k * k + (dy + r) * k + (dx + r), oi, oj]
                                acc += weight * x[b, g * cg : (g + 1) * cg, y, xx]
                    out[b, g * cg : (g + 1) * cg, oi, oj] = acc
    return out


def output_size(h: int, w: int, s: int, mode: str) -> tuple[int, int]:
    return (h * s, w * s) if mode == "up" else (math.ceil(h / s), math.ceil(w / s))


def carafe_reference_backward(grad_output, features, kernels, kernel_size: int, group: int, scale_factor: int,
                              mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(d/d features, d/d kernels) of sum(grad_output * carafe(features, kernels)): the forward loops, transposed."""
    g_out = np.asarray(grad_output, dtype=np.float64)
    x = np.asarray(features, dtype=np.float64)
    kern = np.asarray(kernels, dtype=np.float64)
    n, c, h, w = x.shape
    s, k, r = scale_factor, kernel_size, kernel_size // 2
    ho, wo = output_size(h, w, s, mode)
    cg = c // group
    gx = np.zeros_like(x)
    gk = np.zeros_like(kern)
    for b in range(n):
        for oi in range(ho):
            for oj in range(wo):
                i, j = (oi // s, oj // s) if mode == "up" else (oi * s, oj * s)
                for g in range(group):
                    go = g_out[b, g * cg : (g + 1) * cg, oi, oj]
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            y, xx = i + dy, j + dx
                            if 0 <= y < h and 0 <= xx < w:
                                tap = g * k * k + (dy + r) * k + (dx + r)
                                gk[b, tap, oi, oj] += go @ x[b, g * cg : (g + 1) * cg, y, xx]
                                gx[b, g * cg : (g + 1) * cg, y, xx] += kern[b, tap, oi, oj] * go
    return gx, gk


def roi_align_reference(feat, rois, bidx, oh, ow, scale, ratio, aligned: bool = True):
    """mmcv RoIAlign(pool_mode="avg") written as plain float64 loops; ``aligned`` (ONNX "half_pixel") shifts the RoI
    by half a pixel, otherwise ("output_half_pixel") a RoI is at least 1 x 1. A batch index outside the batch pools
    to zeros."""
    feat = feat.astype(np.float64)
    n, c, h, w = feat.shape
    out = np.zeros((len(rois), c, oh, ow))

    def bilinear(img, y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return np.zeros(c)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1 = h - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= w - 1:
            x0 = x1 = w - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1]
                + ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1])

    offset = 0.5 if aligned else 0.0
    for k, (roi, b) in enumerate(zip(rois.astype(np.float64), bidx)):
        if not 0 <= b < n:
            continue
        x_start, y_start = roi[0] * scale - offset, roi[1] * scale - offset
        rw, rh = (roi[2] - roi[0]) * scale, (roi[3] - roi[1]) * scale
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / oh, rw / ow
        gh = ratio if ratio > 0 else math.ceil(rh / oh)
        gw = ratio if ratio > 0 else math.ceil(rw / ow)
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(c)
                for iy in range(gh):
                    y = y_start + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        acc += bilinear(feat[b], y, x_start + pw * bw + (ix + 0.5) * bw / gw)
                out[k, :, ph, pw] = acc / max(gh * gw, 1)
    return out

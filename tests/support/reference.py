"""Independent float64 reference of the CARAFE op, written as plain loops straight from CONTRACT §1.

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

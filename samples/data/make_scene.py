#!/usr/bin/env python3
"""Draws samples/data/scene.png, the bundled test image: a synthetic street scene (no downloads, reproducible)."""

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


def draw_scene(width: int = 640, height: int = 427, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(img)
    horizon = int(height * 0.55)
    for y in range(horizon):  # sky gradient
        t = y / horizon
        d.line([(0, y), (width, y)], fill=(int(110 + 80 * t), int(160 + 60 * t), int(230 - 10 * t)))
    d.rectangle([0, horizon, width, height], fill=(90, 90, 95))  # road
    d.rectangle([0, horizon, width, horizon + 18], fill=(150, 150, 140))  # pavement
    for x in range(20, width, 90):  # lane marks
        d.rectangle([x, int(height * 0.8), x + 45, int(height * 0.8) + 6], fill=(235, 235, 220))
    d.ellipse([width - 110, 25, width - 50, 85], fill=(255, 230, 120))  # sun
    for i in range(4):  # buildings on the horizon
        x0 = 10 + i * 150 + rng.randint(0, 30)
        top = horizon - rng.randint(80, 160)
        d.rectangle([x0, top, x0 + 110, horizon], fill=(rng.randint(120, 180), rng.randint(100, 150), 110))
        for wy in range(top + 12, horizon - 20, 28):
            for wx in range(x0 + 10, x0 + 100, 25):
                d.rectangle([wx, wy, wx + 12, wy + 16], fill=(60, 70, 90))
    # a car
    cx, cy = 170, horizon + 70
    d.rounded_rectangle([cx, cy, cx + 190, cy + 55], radius=12, fill=(200, 30, 40))
    d.polygon([(cx + 40, cy), (cx + 70, cy - 35), (cx + 140, cy - 35), (cx + 165, cy)], fill=(180, 25, 35))
    d.polygon([(cx + 75, cy - 29), (cx + 100, cy - 29), (cx + 100, cy - 3), (cx + 55, cy - 3)], fill=(170, 210, 235))
    d.polygon([(cx + 107, cy - 29), (cx + 135, cy - 29), (cx + 155, cy - 3), (cx + 107, cy - 3)], fill=(170, 210, 235))
    for wx in (cx + 25, cx + 135):
        d.ellipse([wx, cy + 35, wx + 40, cy + 75], fill=(25, 25, 25))
        d.ellipse([wx + 12, cy + 47, wx + 28, cy + 63], fill=(160, 160, 160))
    # a person
    px, py = 470, horizon - 10
    d.ellipse([px - 12, py - 5, px + 12, py + 19], fill=(230, 190, 160))
    d.rectangle([px - 16, py + 20, px + 16, py + 80], fill=(40, 80, 160))
    d.rectangle([px - 14, py + 80, px - 3, py + 135], fill=(40, 40, 50))
    d.rectangle([px + 3, py + 80, px + 14, py + 135], fill=(40, 40, 50))
    d.rectangle([px - 24, py + 22, px - 16, py + 70], fill=(40, 80, 160))
    d.rectangle([px + 16, py + 22, px + 24, py + 70], fill=(40, 80, 160))
    # a stop sign
    sx, sy = 585, horizon - 60
    d.rectangle([sx - 3, sy, sx + 3, horizon + 40], fill=(120, 120, 120))
    d.regular_polygon((sx, sy, 24), 8, fill=(200, 20, 20))
    return img.filter(ImageFilter.GaussianBlur(0.6))


if __name__ == "__main__":
    from carafe_deploy.files import atomic_path

    out = Path(__file__).with_name("scene.png")
    with atomic_path(out) as tmp:
        draw_scene().save(tmp, format="PNG", optimize=True)
    print(f"wrote {out}")

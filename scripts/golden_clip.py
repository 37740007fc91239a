#!/usr/bin/python3
"""Regenerate the image-decoding, resampling and CLIP-preprocessing goldens.

Run with Debian's interpreter, which has python3-pil and python3-numpy:

    /usr/bin/python3 scripts/golden_clip.py [--photos DIR]

It writes, deterministically:

  inference/imaging/testdata/decode/   small encoded inputs of every kind the
      decoder must treat like PIL (alpha, grey, palette, 16-bit, CMYK, GIF...)
      and, for each, the RGB image PIL's decode_pil produces, as an 8-bit RGB PNG.
  inference/imaging/testdata/resize/   source images and resize.json: the sha256
      of PIL's Image.resize output for many sizes, with BICUBIC and LANCZOS.
  inference/clip/testdata/             CLIP visual cases: inputs, golden.json
      with Immich's resize/crop geometry, the uint8 crop (PNG), and sha256 of the
      float32 NCHW tensor; the tensor itself (raw little-endian float32) for the
      small sizes the Go tests run through a generated model.
  photos.json in both testdata folders: the same for the real photos
      (.deps/testdata/photos/sample*.jpg, not committed), as hashes only.

The CLIP steps are Immich's (machine-learning/immich_ml/models/transforms.py):
decode_pil, resize_pil (shortest side to `size`, the other side
int(long/short*size), BICUBIC), crop_pil (left = int(w/2 - size/2)), then
(np.asarray(img, float32) / 255.0 - mean) / std with float32 mean and std,
HWC -> CHW, batch dimension.
"""

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGING = os.path.join(ROOT, "inference", "imaging", "testdata")
CLIP = os.path.join(ROOT, "inference", "clip", "testdata")

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

# PIL warns about palette transparency given as bytes; Immich ignores it too.
warnings.simplefilter("ignore")


# ---------------------------------------------------------------- Immich's steps


def decode_pil(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def resize_pil(img: Image.Image, size: int) -> Image.Image:
    if img.width < img.height:
        return img.resize((size, int((img.height / img.width) * size)), resample=Image.Resampling.BICUBIC)
    return img.resize((int((img.width / img.height) * size), size), resample=Image.Resampling.BICUBIC)


def crop_pil(img: Image.Image, size: int) -> Image.Image:
    left = int((img.size[0] / 2) - (size / 2))
    upper = int((img.size[1] / 2) - (size / 2))
    return img.crop((left, upper, left + size, upper + size))


def clip_tensor(crop: Image.Image, mean, std) -> np.ndarray:
    x = np.asarray(crop, dtype=np.float32) / 255.0
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype("<f4")


# ---------------------------------------------------------------- helpers


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", optimize=True)
    return b.getvalue()


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(arr: np.ndarray, color_type: int, depth: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand, for layouts PIL cannot write (16-bit colour, 2-bit grey...)."""
    h, w = arr.shape[:2]
    flat = arr.reshape(h, -1)
    rows = []
    for y in range(h):
        if depth == 16:
            row = flat[y].astype(">u2").tobytes()
        elif depth == 8:
            row = flat[y].astype(np.uint8).tobytes()
        else:
            per = 8 // depth
            vals = flat[y].astype(np.uint8)
            packed = bytearray((len(vals) + per - 1) // per)
            for i, v in enumerate(vals):
                packed[i // per] |= int(v) << (8 - depth * (i % per + 1))
            row = bytes(packed)
        rows.append(b"\0" + row)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
            + png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + png_chunk(b"IEND", b""))


def raw_gif(width: int, height: int, table: bytes, frame, transparent=None, background=0) -> bytes:
    """A GIF with one frame at (x, y, w, h) of 4-bit indices, LZW-coded without compression."""
    x, y, w, h, idx = frame
    mcs = 4
    clear, end, size = 1 << mcs, (1 << mcs) + 1, mcs + 1
    out, acc, nbits = bytearray(), 0, 0

    def emit(code):
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8

    emit(clear)
    n = 0
    for v in idx.ravel():
        emit(int(v))
        n += 1
        if n == (1 << size) - clear - 3:  # reset before the code size grows
            emit(clear)
            n = 0
    emit(end)
    if nbits:
        out.append(acc & 255)
    b = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + bytes([0xF0 | 3, background, 0]) + table)
    if transparent is not None:
        b += bytes([0x21, 0xF9, 4, 1, 0, 0, transparent, 0])
    b += bytes([0x2C]) + struct.pack("<HHHH", x, y, w, h) + bytes([0, mcs])
    for i in range(0, len(out), 255):
        chunk = out[i:i + 255]
        b += bytes([len(chunk)]) + chunk
    b += b"\0;"
    return bytes(b)


def smooth(rng, h: int, w: int, noise: float = 6.0) -> np.ndarray:
    """A photo-like RGB image: gradients, waves, discs, edges and a little noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.3)
        img[..., c] = 128 + 60 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
        img[..., c] += 50 * (xx / max(w - 1, 1) - 0.5) * (1 if c != 1 else -1)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        col = rng.uniform(0, 255, 3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
    x0 = int(w * 0.6)
    img[:, x0:x0 + max(1, w // 50)] = [250, 250, 240]  # a thin bright bar: ringing
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- decode goldens


def decode_inputs(rng) -> dict:
    W, H = 37, 23
    rgb = smooth(rng, H, W, noise=20)
    rgba = np.dstack([rgb, rng.integers(0, 256, (H, W))]).astype(np.uint8)
    pal = rng.integers(0, 256, 48).astype(np.uint8).tobytes()
    big = Image.fromarray(smooth(rng, 48, 74, noise=12))
    out = {
        "rgb8.png": raw_png(rgb, 2, 8),
        "rgba8.png": raw_png(rgba, 6, 8),
        "gray8.png": raw_png(rgb[..., 0], 0, 8),
        "graya8.png": raw_png(rgba[..., [0, 3]], 4, 8),
        "gray1.png": raw_png(rng.integers(0, 2, (H, W)), 0, 1),
        "gray2.png": raw_png(rng.integers(0, 4, (H, W)), 0, 2),
        "gray4.png": raw_png(rng.integers(0, 16, (H, W)), 0, 4),
        "pal4.png": raw_png(rng.integers(0, 16, (H, W)), 3, 4, png_chunk(b"PLTE", pal)),
        "pal8_trns.png": raw_png(rng.integers(0, 16, (H, W)), 3, 8,
                                 png_chunk(b"PLTE", pal) + png_chunk(b"tRNS", bytes(range(0, 256, 17)))),
        "rgb8_trns.png": raw_png(rgb, 2, 8, png_chunk(b"tRNS", struct.pack(">HHH", *rgb[0, 0]))),
        "rgb16.png": raw_png(rng.integers(0, 65536, (H, W, 3)), 2, 16),
        "rgba16.png": raw_png(rng.integers(0, 65536, (H, W, 4)), 6, 16),
        "gray16.png": raw_png(rng.integers(0, 600, (H, W)), 0, 16),
        "graya16.png": raw_png(rng.integers(0, 65536, (H, W, 2)), 4, 16),
        "interlaced.png": encode(Image.fromarray(rgb), "PNG"),
        "jpeg420.jpg": encode(big, "JPEG", quality=85),
        "jpeg444.jpg": encode(big, "JPEG", quality=95, subsampling=0),
        "jpeg422_progressive.jpg": encode(big, "JPEG", quality=70, subsampling=1, progressive=True),
        "jpeg_gray.jpg": encode(big.convert("L"), "JPEG", quality=90),
        "cmyk_adobe.jpg": encode(big.convert("CMYK"), "JPEG", quality=90),
        "webp_lossy.webp": encode(big, "WEBP", quality=80),
        "webp_lossless_alpha.webp": encode(Image.fromarray(rgba), "WEBP", lossless=True),
        "gif_offset_trns.gif": raw_gif(40, 30, pal, (3, 2, 20, 17, rng.integers(0, 16, (17, 20))), transparent=5),
        "gif_full.gif": raw_gif(20, 17, pal, (0, 0, 20, 17, rng.integers(0, 16, (17, 20)))),
        "bmp24.bmp": encode(Image.fromarray(rgb), "BMP"),
        "bmp8_palette.bmp": encode(Image.fromarray(rgb).convert("P"), "BMP"),
        "tiff_rgb.tiff": encode(Image.fromarray(rgb), "TIFF"),
        "tiff_gray16.tiff": encode(Image.fromarray(rng.integers(0, 600, (H, W)).astype(np.uint16)), "TIFF"),
        "exif_rotated.jpg": encode(big, "JPEG", quality=85, exif=exif_orientation(6)),
    }
    # The same CMYK data without its Adobe marker: PIL still reads it inverted.
    cmyk = out["cmyk_adobe.jpg"]
    i = cmyk.find(b"\xff\xee")
    n = int.from_bytes(cmyk[i + 2:i + 4], "big")
    out["cmyk_no_adobe.jpg"] = cmyk[:i] + cmyk[i + 2 + n:]
    # PIL's own palette PNG with transparency (mode P, tRNS as bytes).
    p = Image.fromarray(rgb).convert("P")
    p.info["transparency"] = bytes(range(0, 256))
    out["pal8_pil.png"] = encode(p, "PNG", transparency=bytes(range(256)))
    return out


def exif_orientation(o: int) -> bytes:
    """A minimal EXIF block with an Orientation tag; Immich must ignore it."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, o, 0) + struct.pack("<I", 0)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd


def gen_decode(rng) -> None:
    d = os.path.join(IMAGING, "decode")
    cases = []
    for name, data in sorted(decode_inputs(rng).items()):
        write(os.path.join(d, name), data)
        im = decode_pil(data)
        write(os.path.join(d, name + ".rgb.png"), png_bytes(im))
        cases.append({"input": name, "want": name + ".rgb.png", "w": im.width, "h": im.height,
                      "mode": Image.open(io.BytesIO(data)).mode,
                      "rgb_sha256": sha256(np.asarray(im).tobytes())})
    write(os.path.join(d, "decode.json"), json.dumps({"pillow": PIL.__version__, "cases": cases}, indent=1).encode())


# ---------------------------------------------------------------- resize goldens


def gen_resize(rng) -> None:
    d = os.path.join(IMAGING, "resize")
    sources = {
        "noise_97x61.png": Image.fromarray(rng.integers(0, 256, (61, 97, 3)).astype(np.uint8)),
        "smooth_160x120.png": Image.fromarray(smooth(rng, 120, 160, noise=0)),
        "column_1x50.png": Image.fromarray(rng.integers(0, 256, (50, 1, 3)).astype(np.uint8)),
        "row_50x1.png": Image.fromarray(rng.integers(0, 256, (1, 50, 3)).astype(np.uint8)),
        "steps_16x16.png": Image.fromarray(np.kron(rng.integers(0, 2, (4, 4, 1)) * 255,
                                                   np.ones((4, 4, 3))).astype(np.uint8)),
    }
    cases = []
    for name, im in sources.items():
        write(os.path.join(d, name), png_bytes(im))
        w0, h0 = im.size
        sizes = {(1, 1), (w0, h0), (w0 * 3, h0), (w0, max(1, h0 // 3)), (w0 * 2 + 1, h0 * 2 + 3),
                 (max(1, w0 // 2), max(1, h0 // 2)), (max(1, w0 // 7), max(1, h0 // 5)), (max(1, w0 - 1), h0 + 1)}
        for _ in range(14):
            sizes.add((int(rng.integers(1, 3 * w0 + 8)), int(rng.integers(1, 3 * h0 + 8))))
        for w, h in sorted(sizes):
            for fname, f in (("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS)):
                out = im.resize((w, h), resample=f)
                cases.append({"src": name, "w": w, "h": h, "filter": fname, "sha256": sha256(out.tobytes())})
    write(os.path.join(d, "resize.json"), json.dumps({"pillow": PIL.__version__, "cases": cases}, indent=1).encode())


# ---------------------------------------------------------------- CLIP goldens


def one_axis_pair(size: int):
    """A height h whose int(h/size*size) is h-1: Immich's resize then changes one axis by one pixel."""
    for h in range(size + 1, 10 * size):
        if int((h / size) * size) != h:
            return size, h
    raise SystemExit("no one-axis case found")


def clip_inputs(rng) -> list:
    photo = Image.fromarray(smooth(rng, 299, 448, noise=3))
    ow, oh = one_axis_pair(49)
    cases = [
        ("photo.jpg", encode(photo, "JPEG", quality=80), 224, OPENAI_MEAN, OPENAI_STD),
        ("photo_28.jpg", encode(photo.resize((160, 107)), "JPEG", quality=88), 28, OPENAI_MEAN, OPENAI_STD),
        ("siglip.jpg", encode(Image.fromarray(smooth(rng, 300, 256, noise=2)), "JPEG", quality=75), 64, SIGLIP_MEAN, SIGLIP_STD),
        ("wide.png", png_bytes(Image.fromarray(smooth(rng, 40, 900, noise=0))), 64, OPENAI_MEAN, OPENAI_STD),
        ("tall.png", png_bytes(Image.fromarray(smooth(rng, 700, 30, noise=0))), 28, OPENAI_MEAN, OPENAI_STD),
        ("tiny_3x2.png", png_bytes(Image.fromarray(rng.integers(0, 256, (2, 3, 3)).astype(np.uint8))), 28, OPENAI_MEAN, OPENAI_STD),
        ("pixel_1x1.png", png_bytes(Image.fromarray(np.array([[[200, 30, 90]]], np.uint8))), 32, OPENAI_MEAN, OPENAI_STD),
        ("line_1x300.png", png_bytes(Image.fromarray(rng.integers(0, 256, (300, 1, 3)).astype(np.uint8))), 32, OPENAI_MEAN, OPENAI_STD),
        ("rgba.png", png_bytes(Image.fromarray(np.dstack([smooth(rng, 60, 80, noise=1), rng.integers(0, 256, (60, 80))]).astype(np.uint8), "RGBA")), 28, OPENAI_MEAN, OPENAI_STD),
        ("gray.png", png_bytes(Image.fromarray(smooth(rng, 130, 100, noise=0)[..., 1], "L")), 64, OPENAI_MEAN, OPENAI_STD),
        ("palette.png", encode(Image.fromarray(smooth(rng, 70, 90, noise=1)).convert("P"), "PNG", transparency=3), 64, OPENAI_MEAN, OPENAI_STD),
        ("cmyk.jpg", encode(Image.fromarray(smooth(rng, 120, 160, noise=0)).convert("CMYK"), "JPEG", quality=85), 28, OPENAI_MEAN, OPENAI_STD),
        ("rgb16.png", raw_png((smooth(rng, 30, 40, noise=1).astype(np.uint16) * 257 + rng.integers(0, 257, (30, 40, 3))), 2, 16), 28, OPENAI_MEAN, OPENAI_STD),
        ("gray16.png", raw_png(rng.integers(0, 400, (30, 40)), 0, 16), 28, OPENAI_MEAN, OPENAI_STD),
        ("exact_64.png", png_bytes(Image.fromarray(smooth(rng, 64, 64, noise=0))), 64, OPENAI_MEAN, OPENAI_STD),
        (f"one_axis_{ow}x{oh}.png", png_bytes(Image.fromarray(smooth(rng, oh, ow, noise=1))), 49, OPENAI_MEAN, OPENAI_STD),
        ("odd_333x222.png", png_bytes(Image.fromarray(smooth(rng, 222, 333, noise=0))), 99, OPENAI_MEAN, OPENAI_STD),
        ("upscale_30x20.png", png_bytes(Image.fromarray(smooth(rng, 20, 30, noise=30))), 64, OPENAI_MEAN, OPENAI_STD),
        ("webp.webp", encode(Image.fromarray(smooth(rng, 150, 200, noise=2)), "WEBP", quality=75), 28, OPENAI_MEAN, OPENAI_STD),
    ]
    return cases


def clip_case(name: str, data: bytes, size: int, mean, std) -> dict:
    img = decode_pil(data)
    resized = resize_pil(img, size)
    crop = crop_pil(resized, size)
    t = clip_tensor(crop, mean, std)
    return {"w": img.width, "h": img.height, "size": size, "mean": mean, "std": std,
            "resized": [resized.width, resized.height],
            "crop_sha256": sha256(np.asarray(crop).tobytes()),
            "tensor_sha256": sha256(t.tobytes())}, crop, t


def gen_clip(rng) -> None:
    cases = []
    for name, data, size, mean, std in clip_inputs(rng):
        write(os.path.join(CLIP, "in", name), data)
        c, crop, t = clip_case(name, data, size, mean, std)
        c["input"] = "in/" + name
        if size <= 100:  # the big crops are checked by their hash only
            c["crop"] = "crop/" + name + ".png"
            write(os.path.join(CLIP, c["crop"]), png_bytes(crop))
        if size <= 28:  # small enough to commit, and what the model tests run
            c["tensor"] = "tensor/" + name + ".f32"
            write(os.path.join(CLIP, c["tensor"]), t.tobytes())
        cases.append(c)
    write(os.path.join(CLIP, "golden.json"), json.dumps({"pillow": PIL.__version__, "numpy": np.__version__,
                                                          "cases": cases}, indent=1).encode())


def gen_photos(photos: str) -> None:
    names = sorted(n for n in os.listdir(photos) if n.startswith("sample") and n.endswith(".jpg")) if os.path.isdir(photos) else []
    if not names:
        print(f"no photos in {photos}; photos.json not regenerated", file=sys.stderr)
        return
    dec, clip = [], []
    for n in names:
        data = open(os.path.join(photos, n), "rb").read()
        img = decode_pil(data)
        dec.append({"file": "photos/" + n, "w": img.width, "h": img.height,
                    "rgb_sha256": sha256(np.asarray(img).tobytes()),
                    "lanczos_half_sha256": sha256(img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS).tobytes())})
        for size, mean, std in ((224, OPENAI_MEAN, OPENAI_STD), (384, SIGLIP_MEAN, SIGLIP_STD)):
            c, _, _ = clip_case(n, data, size, mean, std)
            c["file"] = "photos/" + n
            clip.append(c)
    write(os.path.join(IMAGING, "photos.json"), json.dumps({"pillow": PIL.__version__, "cases": dec}, indent=1).encode())
    write(os.path.join(CLIP, "photos.json"), json.dumps({"pillow": PIL.__version__, "cases": clip}, indent=1).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=os.path.join(os.environ.get("MLSERVE_TESTDATA", os.path.join(ROOT, ".deps", "testdata")), "photos"))
    args = ap.parse_args()
    gen_decode(np.random.default_rng(1))
    gen_resize(np.random.default_rng(2))
    gen_clip(np.random.default_rng(3))
    gen_photos(args.photos)


if __name__ == "__main__":
    main()

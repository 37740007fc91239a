#!/usr/bin/python3
"""Regenerate the OCR goldens in inference/ocr/testdata.

An independent implementation of the reference steps (Immich's OCR
detection and recognition, which use RapidOCR 3.x's DBPostProcess,
sorted_boxes, TextRecognizer and CTCLabelDecode), written from the
reference's description with Debian 12's packages only:

    apt-get install python3-opencv python3-numpy python3-pil \
        python3-pyclipper python3-shapely
    /usr/bin/python3 scripts/golden_ocr.py

It writes, under inference/ocr/testdata:
  dbmaps/*.png          synthetic DB probability maps (8-bit, p = v/255)
  db_golden.json        boxes and scores of the post-processing per map
  unclip_golden.json    pyclipper round offsets of minAreaRect boxes
  order_golden.json     reading order of box sets
  crop_src.png, crop_golden.json, crops/*.png
                        perspective crops (PIL, bicubic) with Immich's
                        float32 DLT/SVD homography
  rec_golden.json       recognition input tensors (resize_norm_img) as
                        checksums, and CTC greedy decoding
It also reads dbmaps/real_*.png when present: maps written by the Go
tests from the real PP-OCRv4 detector (go test ./inference/ocr -run
TestWriteRealMaps -update).

The Go tests never run Python; this script only refreshes the goldens.
"""

import hashlib
import json
import math
import os
import sys

import cv2
import numpy as np
import pyclipper
from PIL import Image
from shapely.geometry import Polygon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "inference", "ocr", "testdata")


# ---------------------------------------------------------------- detection


def f32(a):
    """float32 values as the shortest decimals that read back the same."""
    return np.vectorize(lambda v: float(str(np.float32(v))), otypes=[object])(np.asarray(a, np.float32)).tolist()


def mini_box(points_in):
    """minAreaRect, then the corners ordered tl, tr, br, bl (get_mini_boxes)."""
    rect = cv2.minAreaRect(points_in)
    pts = sorted(list(cv2.boxPoints(rect)), key=lambda p: p[0])
    if pts[1][1] > pts[0][1]:
        a, d = 0, 1
    else:
        a, d = 1, 0
    if pts[3][1] > pts[2][1]:
        b, c = 2, 3
    else:
        b, c = 3, 2
    return np.array([pts[a], pts[b], pts[c], pts[d]]), min(rect[1])


def score_fast(prob, box):
    h, w = prob.shape
    box = box.copy()
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    box[:, 0] -= x0
    box[:, 1] -= y0
    cv2.fillPoly(mask, box.reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0]


def score_slow(prob, contour):
    h, w = prob.shape
    c = contour.reshape(-1, 2).copy()
    x0 = int(np.clip(c[:, 0].min(), 0, w - 1))
    x1 = int(np.clip(c[:, 0].max(), 0, w - 1))
    y0 = int(np.clip(c[:, 1].min(), 0, h - 1))
    y1 = int(np.clip(c[:, 1].max(), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    c[:, 0] -= x0
    c[:, 1] -= y0
    cv2.fillPoly(mask, c.reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0]


def grow(box, ratio=1.6):
    """Unclip: pyclipper round offset by area*ratio/perimeter."""
    poly = Polygon(box)
    dist = poly.area * ratio / poly.length
    off = pyclipper.PyclipperOffset()
    off.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return off.Execute(dist), dist


def clockwise(pts):
    xs = pts[np.argsort(pts[:, 0], kind="stable"), :]
    left = xs[:2][np.argsort(xs[:2, 1], kind="stable")]
    right = xs[2:][np.argsort(xs[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def db_postprocess(prob, box_thresh, mode, dest_w, dest_h):
    h, w = prob.shape
    seg = (prob > 0.3).astype(np.uint8)
    seg = cv2.dilate(seg, np.array([[1, 1], [1, 1]]))
    contours, _ = cv2.findContours(seg * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes, scores = [], []
    for contour in contours[:1000]:
        box, side = mini_box(contour)
        if side < 3:
            continue
        s = score_fast(prob, box.reshape(-1, 2)) if mode == "fast" else score_slow(prob, contour)
        if box_thresh > s:
            continue
        polys, _ = grow(box)
        box, side = mini_box(np.array(polys).reshape(-1, 1, 2))
        if side < 5:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
        boxes.append(box.astype(np.int32))
        scores.append(s)
    out_b, out_s = [], []
    for box, s in zip(boxes, scores):
        box = clockwise(box)
        for p in box:
            p[0] = int(min(max(p[0], 0), dest_w - 1))
            p[1] = int(min(max(p[1], 0), dest_h - 1))
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        out_b.append(box)
        out_s.append(s)
    return out_b, out_s


def reading_order(boxes):
    """Stable sort by top-left y, lines split at gaps >= 10, then (line, x)."""
    n = len(boxes)
    if n == 0:
        return []
    y = np.array([b[0][1] for b in boxes], dtype=np.float32)
    x = np.array([b[0][0] for b in boxes], dtype=np.float32)
    by_y = list(np.argsort(y, kind="stable"))
    line = {by_y[0]: 0}
    for k in range(1, n):
        line[by_y[k]] = line[by_y[k - 1]] + (1 if y[by_y[k]] - y[by_y[k - 1]] >= 10 else 0)
    return sorted(by_y, key=lambda i: (line[i], x[i]))  # sorted() is stable


def synth_map(rng, h, w, n, angle_max, noise):
    """A DB-like map: blurred filled rotated rectangles plus noise."""
    m = np.zeros((h, w), np.float32)
    for _ in range(n):
        cx, cy = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5)
        bw, bh = rng.uniform(2, w / 3), rng.uniform(2, 16)
        ang = rng.uniform(-angle_max, angle_max)
        pts = cv2.boxPoints(((cx, cy), (bw, bh), ang))
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], float(rng.uniform(0.45, 1.0)))
    m = cv2.GaussianBlur(m, (3, 3), 0.8)
    m += rng.normal(0, noise, m.shape).astype(np.float32)
    return np.clip(np.round(m * 255), 0, 255).astype(np.uint8)


def make_db(rng):
    d = os.path.join(OUT, "dbmaps")
    os.makedirs(d, exist_ok=True)
    specs = [
        ("lines", 96, 160, 8, 0, 0.02),
        ("rotated", 128, 128, 10, 60, 0.03),
        ("dense", 160, 224, 30, 15, 0.05),
        ("noisy", 96, 128, 6, 30, 0.25),
        ("edges", 64, 96, 12, 90, 0.0),
    ]
    for name, h, w, n, amax, noise in specs:
        cv2.imwrite(os.path.join(d, name + ".png"), synth_map(rng, h, w, n, amax, noise))
    # Rendered text, blurred and thickened the way a DB map joins letters.
    t = np.zeros((120, 200), np.uint8)
    for i, (word, ang) in enumerate([("Hello world", 0), ("mlserve OCR 42", 0), ("tilted", 0)]):
        cv2.putText(t, word, (8 + 20 * i, 30 + 35 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 230, 2)
    t = cv2.dilate(t, np.ones((5, 5), np.uint8))
    t = cv2.warpAffine(t, cv2.getRotationMatrix2D((100, 60), 7, 1.0), (200, 120))
    cv2.imwrite(os.path.join(d, "text.png"), cv2.GaussianBlur(t, (5, 5), 1.5))
    cases = []
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".png"):
            continue
        img = cv2.imread(os.path.join(d, fn), cv2.IMREAD_GRAYSCALE)
        prob = img.astype(np.float32) / 255
        h, w = prob.shape
        for thresh, mode, dw, dh in [
            (0.5, "fast", w, h),
            (0.5, "slow", w, h),
            (0.6, "fast", w * 3 + 7, h * 2 + 1),
            (0.3, "fast", (w * 5) // 7, (h * 5) // 7),
        ]:
            boxes, scores = db_postprocess(prob, thresh, mode, dw, dh)
            order = reading_order(boxes)
            cases.append(
                {
                    "map": fn,
                    "boxThresh": thresh,
                    "scoreMode": mode,
                    "destW": dw,
                    "destH": dh,
                    "boxes": [boxes[i].tolist() for i in order],
                    "scores": [scores[i] for i in order],
                }
            )
    return cases


def make_unclip(rng):
    cases = []
    for _ in range(120):
        pts = np.round(
            cv2.boxPoints(
                (
                    (rng.uniform(0, 400), rng.uniform(0, 300)),
                    (rng.uniform(3, 200), rng.uniform(3, 40)),
                    rng.uniform(-90, 90),
                )
            )
        ).astype(np.int32)
        box, _ = mini_box(pts.reshape(-1, 1, 2))
        polys, dist = grow(box)
        grown, side = mini_box(np.array(polys).reshape(-1, 1, 2))
        cases.append(
            {
                "contour": pts.tolist(),
                "box": f32(box),
                "distance": dist,
                "offset": polys[0],
                "grown": f32(grown),
                "side": float(side),
            }
        )
    return cases


def make_order(rng):
    cases = []
    for _ in range(60):
        n = rng.randint(1, 14)
        boxes = []
        for _ in range(n):
            x = float(rng.randint(0, 500))
            y = float(rng.choice([rng.randint(0, 400), 100, 105, 109, 110, 119, 120]))
            boxes.append([[x, y], [x + 30, y], [x + 30, y + 12], [x, y + 12]])
        cases.append({"boxes": boxes, "order": [int(i) for i in reading_order(boxes)]})
    return cases


# -------------------------------------------------------------- recognition


def homography(boxes):
    """Immich's _get_perspective_transform: float32 8x9 DLT, float32 SVD."""
    w = np.maximum(
        np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1), np.linalg.norm(boxes[:, 2] - boxes[:, 3], axis=1)
    ).astype(np.int32)
    h = np.maximum(
        np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1), np.linalg.norm(boxes[:, 1] - boxes[:, 2], axis=1)
    ).astype(np.int32)
    src = np.zeros((len(boxes), 4, 2), dtype=np.float32)
    src[:, 1:3, 0] = w[:, None]
    src[:, 2:4, 1] = h[:, None]
    x, y = src[:, :, 0], src[:, :, 1]
    u, v = boxes[:, :, 0], boxes[:, :, 1]
    a = np.zeros((len(boxes), 8, 9), dtype=np.float32)
    a[:, ::2, 0], a[:, ::2, 1], a[:, ::2, 2] = x, y, 1
    a[:, ::2, 6], a[:, ::2, 7], a[:, ::2, 8] = -u * x, -u * y, -u
    a[:, 1::2, 3], a[:, 1::2, 4], a[:, 1::2, 5] = x, y, 1
    a[:, 1::2, 6], a[:, 1::2, 7], a[:, 1::2, 8] = -v * x, -v * y, -v
    _, _, vt = np.linalg.svd(a)
    hm = vt[:, -1, :].reshape(-1, 3, 3)
    hm = hm / hm[:, 2:3, 2:3]
    coeffs = np.column_stack(
        [hm[:, 0, 0], hm[:, 0, 1], hm[:, 0, 2], hm[:, 1, 0], hm[:, 1, 1], hm[:, 1, 2], hm[:, 2, 0], hm[:, 2, 1]]
    )
    return coeffs, w, h


def crop_src():
    """A 160x120 RGB test card: gradients, hard edges, a checkerboard."""
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.zeros((120, 160, 3), np.uint8)
    img[..., 0] = (xx * 255 // 159).astype(np.uint8)
    img[..., 1] = (yy * 255 // 119).astype(np.uint8)
    img[..., 2] = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 230, 20).astype(np.uint8)
    cv2.putText(img, "Ab3", (30, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (255, 255, 255), 3)
    return img


def make_crops(rng):
    img = Image.fromarray(crop_src())
    img.save(os.path.join(OUT, "crop_src.png"))
    quads = [
        [[10, 20], [150, 20], [150, 60], [10, 60]],
        [[12, 30], [120, 10], [130, 50], [20, 72]],
        [[40, 5], [70, 5], [70, 115], [40, 115]],  # tall: rotated
        [[0, 0], [159, 0], [159, 119], [0, 119]],
        [[100, 60], [159, 90], [140, 119], [80, 100]],
        [[5, 100], [60, 90], [62, 104], [6, 116]],
    ]
    for _ in range(6):
        cx, cy = rng.uniform(20, 140), rng.uniform(20, 100)
        bw, bh, ang = rng.uniform(10, 120), rng.uniform(6, 40), rng.uniform(-80, 80)
        pts = clockwise(np.round(cv2.boxPoints(((cx, cy), (bw, bh), ang))).clip(0, [159, 119]))
        quads.append(pts.tolist())
    boxes = np.array(quads, dtype=np.float32)
    coeffs, ws, hs = homography(boxes)
    d = os.path.join(OUT, "crops")
    os.makedirs(d, exist_ok=True)
    cases = []
    for i, (c, w, h) in enumerate(zip(coeffs, ws, hs)):
        out = img.transform(
            size=(int(w), int(h)),
            method=Image.Transform.PERSPECTIVE,
            data=tuple(c),
            resample=Image.Resampling.BICUBIC,
        )
        rotated = out.size[1] * 1.0 / out.size[0] >= 1.5
        if rotated:
            out = out.rotate(90, expand=True)
        out.save(os.path.join(d, "crop%02d.png" % i))
        cases.append(
            {
                "quad": f32(boxes[i]),
                "coeffs": [float(v) for v in c],
                "w": int(w),
                "h": int(h),
                "rotated": bool(rotated),
                "png": "crop%02d.png" % i,
            }
        )
    return cases


def resize_norm(img_bgr, max_wh_ratio):
    """RapidOCR TextRecognizer.resize_norm_img with rec_img_shape (3,48,320)."""
    ih = 48
    iw = int(ih * max_wh_ratio)
    h, w = img_bgr.shape[:2]
    ratio = w / float(h)
    rw = iw if math.ceil(ih * ratio) > iw else int(math.ceil(ih * ratio))
    r = cv2.resize(img_bgr, (rw, ih)).astype("float32")
    r = r.transpose((2, 0, 1)) / 255
    r -= 0.5
    r /= 0.5
    pad = np.zeros((3, ih, iw), dtype=np.float32)
    pad[:, :, 0:rw] = r
    return pad


def ctc(probs, chars):
    """CTCLabelDecode: greedy, repeats collapsed, blank 0 dropped."""
    idx = probs.argmax(axis=1)
    prob = probs.max(axis=1)
    sel = np.ones(len(idx), dtype=bool)
    sel[1:] = idx[1:] != idx[:-1]
    sel &= idx != 0
    conf = [round(c, 5) for c in np.array(prob[sel]).tolist()]
    if not conf:
        conf = [0]
    text = "".join(chars[i] for i in idx[sel])
    return text, np.mean(conf).round(5).tolist()


def make_rec(rng):
    crops = []
    for fn in sorted(os.listdir(os.path.join(OUT, "crops"))):
        im = np.array(Image.open(os.path.join(OUT, "crops", fn)).convert("RGB"))
        crops.append((fn, cv2.cvtColor(im, cv2.COLOR_RGB2BGR)))
    tensors = []
    for fn, im in crops:
        for ratio in [320 / 48, im.shape[1] / im.shape[0], 12.5]:
            ratio = max(ratio, im.shape[1] / im.shape[0])
            t = resize_norm(im, ratio)
            tensors.append(
                {
                    "png": fn,
                    "maxWHRatio": ratio,
                    "shape": list(t.shape),
                    "sha256": hashlib.sha256(t.astype("<f4").tobytes()).hexdigest(),
                }
            )
    dictionary = ["a", "b", "c", "d", "e", "\u00e9", "\u4e2d", "1", "2", "!"]
    chars = ["blank"] + dictionary + [" "]
    decode = []
    for k in range(25):
        t = rng.randint(1, 20)
        logits = rng.normal(0, 3, (t, len(chars))).astype(np.float32)
        if k % 5 == 0:
            logits[:, 0] += 6  # mostly blank
        if k % 7 == 0:
            logits[:, 0] += 40  # all blank
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        text, score = ctc(p, chars)
        decode.append({"probs": f32(p), "text": text, "score": score})
    return {"tensors": tensors, "dictionary": dictionary, "decode": decode}


def main():
    rng = np.random.RandomState(20261125)
    os.makedirs(OUT, exist_ok=True)

    def dump(name, obj):
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(obj, f, separators=(",", ":"), ensure_ascii=False)
            f.write("\n")

    dump("db_golden.json", make_db(rng))
    dump("unclip_golden.json", make_unclip(rng))
    dump("order_golden.json", make_order(rng))
    dump("crop_golden.json", make_crops(rng))
    dump("rec_golden.json", make_rec(rng))
    print("goldens written to", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()

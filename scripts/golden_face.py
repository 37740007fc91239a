#!/usr/bin/python3
"""Golden values for inference/face, computed the way Immich's ML service does.

Run with Debian's Python (python3-opencv 4.6, python3-skimage 0.19,
python3-numpy), from the repository root:

    /usr/bin/python3 scripts/golden_face.py

It writes inference/face/testdata/golden_face.json and the aligned crops
inference/face/testdata/align_*.png. The Go tests rebuild the same synthetic
inputs (pattern image, hashed SCRFD outputs) and compare.

This is an independent implementation of the reference formulas
(shared/docs/immich-ml-reference.md §4.4-4.5: insightface 0.7.3 RetinaFace
for SCRFD, face_align.norm_crop, ArcFaceONNX.get_feat), written with numpy
the way insightface computes: float32 arrays, numpy's float32 arithmetic,
cv2 for resizing, blobs and warps, skimage's SimilarityTransform for the
alignment transform. Nothing here needs ONNX Runtime: the SCRFD network
outputs are synthetic values defined by integer hashes that the Go test
reproduces bit for bit.
"""

import hashlib
import json
import os
import sys

import cv2
import numpy as np
from skimage import transform as trans

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "inference", "face", "testdata")

# ---------------------------------------------------------------- inputs


def pattern(w, h):
    """Deterministic RGB test image (uint8, HxWx3): sawtooth gradients with a
    product term, so resizes and warps see edges in every direction."""
    x = np.arange(w, dtype=np.int64)[None, :]
    y = np.arange(h, dtype=np.int64)[:, None]
    chans = [((x * 5 + y * 3 + ((x * y) >> 6) + c * 85) & 255) for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def hash32(g, k):
    """(g*2654435761 + k*40503 + 12345) mod 2^32 on int64 arrays."""
    return (g * 2654435761 + k * 40503 + 12345) % (1 << 32)


STRIDES = [8, 16, 32]
TOTAL = sum((640 // s) ** 2 * 2 for s in STRIDES)  # 16800


# Regions of the 640x640 input where anchors score above 0.5, so that
# candidates cluster and NMS has work to do: (x, y, radius) of circles.
REGIONS = [(200, 150, 60), (450, 300, 90), (100, 500, 40)]


def scrfd_outputs():
    """Synthetic SCRFD outputs at 640x640 in Immich's order: score_8,
    score_16, score_32, bbox_8.., kps_8.. (2-D, as det_10g declares them).
    p = ((g*7919) mod 16800 + 0.5)/16800 is a permutation, so no two scores
    tie; anchors whose centre lies in a region score 0.5 + p/2, others p/2."""
    scores, bboxes, kpss = [], [], []
    base = 0
    for s in STRIDES:
        n = 640 // s
        k = n * n * 2
        g = np.arange(base, base + k, dtype=np.int64)
        cell = (g - base) // 2
        cx, cy = (cell % n) * s, (cell // n) * s
        inside = np.zeros(k, dtype=bool)
        for x, y, r in REGIONS:
            inside |= (cx - x) ** 2 + (cy - y) ** 2 <= r * r
        p = ((g * 7919) % TOTAL + 0.5) / TOTAL
        scores.append(np.where(inside, 0.5 + p / 2, p / 2).astype(np.float32).reshape(-1, 1))
        bb = np.stack([(hash32(g, j) % 1000) / 250.0 for j in range(4)], axis=1)
        bboxes.append(bb.astype(np.float32))
        kp = np.stack([((hash32(g, 4 + j) % 2001) - 1000) / 250.0 for j in range(10)], axis=1)
        kpss.append(kp.astype(np.float32))
        base += k
    return scores + bboxes + kpss


# ------------------------------------------------------ SCRFD (§4.4)


def letterbox(img_bgr, size=640):
    """RetinaFace.detect's resize into the top-left of a black canvas."""
    h, w = img_bgr.shape[:2]
    im_ratio = float(h) / w
    model_ratio = 1.0
    if im_ratio > model_ratio:
        new_h = size
        new_w = int(new_h / im_ratio)
    else:
        new_w = size
        new_h = int(new_w * im_ratio)
    det_scale = float(new_h) / h
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    if new_w > 0 and new_h > 0:
        canvas[:new_h, :new_w, :] = cv2.resize(img_bgr, (new_w, new_h))
    return canvas, new_w, new_h, det_scale


def scrfd_decode(outs, det_scale, thresh, size=640):
    """forward() + detect() + nms() of insightface's RetinaFace, for 9
    outputs (3 strides, 2 anchors, keypoints)."""
    fmc = 3
    scores_l, boxes_l, kps_l = [], [], []
    for idx, s in enumerate(STRIDES):
        scores = outs[idx]
        bbox = outs[idx + fmc] * s
        kps = outs[idx + 2 * fmc] * s
        hh = ww = size // s
        # anchor centres (x*s, y*s), row-major, each twice
        ys, xs = np.mgrid[:hh, :ww]
        centres = (np.stack([xs, ys], axis=-1).astype(np.float32) * s).reshape(-1, 2)
        centres = np.repeat(centres, 2, axis=0)
        pos = np.where(scores >= thresh)[0]
        b = np.stack([centres[:, 0] - bbox[:, 0], centres[:, 1] - bbox[:, 1],
                      centres[:, 0] + bbox[:, 2], centres[:, 1] + bbox[:, 3]], axis=-1)
        k = np.stack([centres[:, i % 2] + kps[:, i] for i in range(10)], axis=-1).reshape(-1, 5, 2)
        scores_l.append(scores[pos])
        boxes_l.append(b[pos])
        kps_l.append(k[pos])
    scores = np.vstack(scores_l).ravel()
    order = scores.argsort()[::-1]
    boxes = np.vstack(boxes_l) / det_scale
    kps = np.vstack(kps_l) / det_scale
    pre = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)[order]
    kps = kps[order]
    keep = nms(pre, 0.4)
    det = pre[keep]
    return det[:, :4].round(), det[:, 4], kps[keep]


def nms(dets, thresh):
    x1, y1, x2, y2, sc = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = sc.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


# ------------------------------------------ alignment and blob (§4.5)

ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def norm_crop(img_bgr, lmk):
    t = trans.SimilarityTransform()
    t.estimate(lmk, ARCFACE_DST)
    m = t.params[0:2, :]
    return m, cv2.warpAffine(img_bgr, m, (112, 112), borderValue=0.0)


def align_cases():
    d = ARCFACE_DST.astype(np.float64)
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    jitter = np.array([[1.5, -0.75], [-1.0, 0.5], [0.25, 1.25], [-1.5, -0.5], [0.75, -1.25]])
    collinear = np.array([[100 + 20 * i, 10 + 0.5 * (100 + 20 * i)] for i in range(5)])
    return [
        ("shift_scale", d * 2 + [100, 50]),
        ("rotated", (d - 56) @ rot.T * 1.5 + [300, 200] + jitter),
        ("corner", d * 3 - [60, 80]),
        ("mirrored", np.stack([112 - d[:, 0], d[:, 1]], axis=1) + [200, 200]),
        ("tiny", d * 0.3 + [400, 300]),
        ("collinear", collinear),
        ("coincident", np.full((5, 2), 50.0)),
    ]


# ---------------------------------------------------------------- output


def f32(v):
    """A float32 as the shortest decimal that round-trips it."""
    return float(str(np.float32(v)))


def sha(b):
    return hashlib.sha256(b).hexdigest()


def main():
    os.makedirs(OUT, exist_ok=True)
    golden = {"letterbox": [], "scrfd": [], "align": [], "blob": {}}

    for w, h in [(1000, 750), (750, 1000), (1234, 987), (640, 640), (333, 1777), (1, 1), (5000, 10), (10000, 10)]:
        bgr = cv2.cvtColor(pattern(w, h), cv2.COLOR_RGB2BGR)
        canvas, nw, nh, scale = letterbox(bgr)
        entry = {"w": w, "h": h, "newW": nw, "newH": nh, "scale": scale}
        if nw > 0 and nh > 0:
            blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128, (640, 640), (127.5, 127.5, 127.5), swapRB=True)
            entry["canvasSHA256"] = sha(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).tobytes())
            entry["blobSHA256"] = sha(blob.astype("<f4").tobytes())
        golden["letterbox"].append(entry)

    outs = scrfd_outputs()
    for w, h, thresh in [(1000, 750, 0.9), (750, 1000, 0.7), (1234, 987, 0.95)]:
        _, _, _, scale = letterbox(np.zeros((h, w, 3), np.uint8))
        boxes, scores, kps = scrfd_decode(outs, scale, np.float32(thresh))
        golden["scrfd"].append({
            "w": w, "h": h, "threshold": f32(thresh), "scale": scale,
            "boxes": [[f32(v) for v in b] for b in boxes],
            "scores": [f32(v) for v in scores],
            "landmarks": [[[f32(v) for v in p] for p in k] for k in kps],
        })

    img = pattern(640, 480)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    for name, lmk in align_cases():
        lmk = lmk.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            m, crop = norm_crop(bgr, lmk)
        entry = {"name": name, "landmarks": [[f32(v) for v in p] for p in lmk]}
        if np.isnan(m).any():
            entry["nan"] = True
        else:
            entry["m"] = [[float(v) for v in row] for row in m]
            png = "align_%s.png" % name
            cv2.imwrite(os.path.join(OUT, png), crop)  # BGR in, an RGB PNG out
            entry["png"] = png
            if name == "shift_scale":
                for key, mean, std in [("arcface", 127.5, 127.5), ("mxnet", 0.0, 1.0), ("mobilefacenet", 127.0, 128.0)]:
                    blob = cv2.dnn.blobFromImages([crop], 1.0 / std, (112, 112), (mean, mean, mean), swapRB=True)
                    golden["blob"][key] = sha(blob.astype("<f4").tobytes())
        golden["align"].append(entry)

    with open(os.path.join(OUT, "golden_face.json"), "w") as f:
        json.dump({"generator": "scripts/golden_face.py",
                   "versions": {"numpy": np.__version__, "opencv": cv2.__version__,
                                "skimage": sys.modules["skimage"].__version__},
                   **golden}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

// Package ocr reads text in images the way Immich's machine-learning
// service does with PP-OCR models: a DB text detector finds quadrilaterals
// ([Detector]), and a CTC recogniser reads each one ([Recognizer]).
//
// Every step follows the reference (Immich's immich_ml/models/ocr, which
// uses RapidOCR 3.x), with the reference's arithmetic where it decides
// which pixels or boxes come out:
//
//   - Detection resizes the image so that its shorter side is at most
//     maxResolution (never upscaling) with sides rounded to multiples of
//     32, with Pillow's Lanczos; unlike Immich, the input's long side is
//     also capped (4000 pixels, as PaddleOCR 3) and its area (2.9
//     megapixels), which Immich's previews never reach at the default
//     maxResolution ([DetectMaxSide], [DetectMaxPixels]); normalises as Immich does (BGR,
//     (x-0.5)/127.5 on 0..255); and post-processes the probability map as
//     RapidOCR's DBPostProcess: threshold 0.3, 2×2 dilation, contours,
//     minimum-area rectangles (OpenCV's own, through a small cgo shim,
//     because gocv rounds them to integers), box scores, the Clipper round
//     offset of the unclip step, size filters, scaling, clockwise corners
//     and clipping. Boxes come out in reading order.
//   - Recognition crops each quadrilateral with Pillow's bicubic
//     PERSPECTIVE sampling (bit-exact given the same coefficients), turns
//     tall crops 90° counter-clockwise, batches crops of similar aspect
//     ratio, resizes them to height 48 with OpenCV's bilinear resize, and
//     decodes the model's output greedily (CTC) with the model's own
//     dictionary.
//
// Where Immich itself behaves unexpectedly the documented behaviour is
// implemented instead, and the difference noted: reading order is the one
// the reference describes (Immich v3.1's sorted_boxes indexes its line ids
// with the sort permutation, which scrambles lines when the boxes do not
// arrive sorted by y, as OpenCV's contours never do), and box scores stay
// with their boxes (Immich returns them in contour order).
//
// Memory does not grow with the input beyond the image itself: detection
// runs on the resized image, whose size is bounded, and recognition crops
// one batch at a time.
//
// Detectors and recognisers are safe for concurrent use.
package ocr

// Package face is Immich's facial-recognition pipeline: face detection,
// five-point alignment and embeddings, exactly as Immich's machine-learning
// service computes them with insightface (SCRFD detection, ArcFace
// recognition), plus other model families behind the same interface.
//
// A face model pack is a folder <cache>/facial-recognition/<name> with
// detection/model.onnx and recognition/model.onnx. [LoadDetector] and
// [LoadRecognizer] each load one half. Which family a model belongs to is
// read from an optional model.json of ours next to the ONNX file:
//
//	detection/model.json    {"family": "scrfd"}                       (default: Immich's packs)
//	                        {"family": "ultraface", "landmarks": "landmarks.onnx"}
//	                        {"family": "blazeface"}                   ("landmarks" optional)
//	recognition/model.json  {"family": "arcface"}                     (default)
//	                        {"family": "mobilefacenet"}               (mean 127, std 128)
//	                        {"mean": 127.5, "std": 127.5}             (explicit normalisation)
//
// SCRFD (insightface RetinaFace class, as Immich uses it): letterbox into
// the model's input (640×640 when its size is dynamic) at the top-left with
// OpenCV's bilinear resize, blob (x−127.5)/128 RGB NCHW, anchors at strides
// 8/16/32 (two per cell) or 8..128 (one per cell), keep score ≥ minScore,
// sort by score, divide by the letterbox scale, greedy NMS at IoU > 0.4 with
// the "+1" area convention, boxes rounded half-to-even and not clipped.
//
// UltraFace (e.g. faceplugin's fr_detect.onnx, boxes decoded in the graph):
// stretch to the model's input (320×240), (x−127)/128 RGB, score column 1,
// NMS at IoU > 0.3; the five points come from a 68-point landmark model
// (fr_landmark.onnx: 64×64 grey crop of the squared box, x/256).
// BlazeFace (MediaPipe, NHWC, x/127.5−1): letterboxed like SCRFD, anchors
// 16×16×2 and 8×8×6, sigmoid scores, weighted NMS at IoU ≥ 0.3, five points
// from its six keypoints (eyes, nose, mouth centre widened to two corners)
// or from a 68-point landmark model.
//
// Alignment is insightface's norm_crop: a similarity transform estimated as
// skimage's SimilarityTransform does (Umeyama with scale) from the five
// points to the ArcFace template, and OpenCV's warpAffine (bilinear, black
// border) to 112×112. Recognition is insightface's ArcFaceONNX.get_feat:
// (x−127.5)/127.5 RGB NCHW, or mean 0/std 1 for MXNet-converted models
// (a "Sub"/"_minus" and a "Mul"/"_mul" node among the first eight), raw
// embeddings (not normalised).
//
// The decoded image ([imaging.Image], RGB) is shared read-only by detection
// and recognition of one request; every step works on it in place (all
// operations are per channel, so no BGR copy is ever made). Detectors and
// recognizers are safe for concurrent use.
package face

import (
	"errors"
	"fmt"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
)

// Errors returned by this package, wrapped with context.
var (
	// ErrUnsupportedModel: the model's inputs or outputs do not fit its
	// family.
	ErrUnsupportedModel = errors.New("unsupported face model")
	// ErrConfig: the model folder's model.json is invalid.
	ErrConfig = errors.New("invalid face model configuration")
	// ErrImage: the image is missing, empty or inconsistent.
	ErrImage = errors.New("invalid image")
	// ErrDetections: the detections given to Recognize are inconsistent
	// (lengths differ, landmarks missing).
	ErrDetections = errors.New("invalid face detections")
	// ErrAlignment: a face's landmarks define no similarity transform (all
	// five points coincide, or are not finite). Recognize does not fail on
	// it: such a face gets the embedding of a black crop.
	ErrAlignment = errors.New("face landmarks cannot be aligned")
)

// Sessions makes inference sessions (the pool's session cache or an
// *inference.Runtime).
type Sessions interface {
	NewSession(path string, o inference.SessionOptions) (*inference.Session, error)
}

var _ Sessions = (*inference.Runtime)(nil)

// Detections are the faces a detector found, in Immich's order (by score,
// highest first, after NMS). The three slices have one entry per face.
type Detections struct {
	// Boxes are x1, y1, x2, y2 in pixels of the decoded image, rounded half
	// to even as Immich returns them; not clipped (may be negative or
	// beyond the image).
	Boxes [][4]float32
	// Scores are the detector's confidences.
	Scores []float32
	// Landmarks are five points per face (left eye, right eye, nose, left
	// and right mouth corner, as seen in the image), in pixels, unrounded.
	// Nil when the detector has no keypoints and no landmark model.
	Landmarks [][5][2]float32
}

// Len is the number of faces.
func (d *Detections) Len() int {
	if d == nil {
		return 0
	}
	return len(d.Boxes)
}

// Face is one recognised face, as Immich's recognizer returns it.
type Face struct {
	Box       [4]float32 // x1, y1, x2, y2, as in Detections
	Embedding []float32  // raw model output, not normalised
	Score     float32    // detection score
}

// checkImage rejects images that would make OpenCV misbehave.
func checkImage(img *imaging.Image) error {
	if img == nil {
		return fmt.Errorf("%w: no image", ErrImage)
	}
	if img.W <= 0 || img.H <= 0 {
		return fmt.Errorf("%w: %dx%d", ErrImage, img.W, img.H)
	}
	if len(img.Pix) != img.W*img.H*3 {
		return fmt.Errorf("%w: %dx%d RGB needs %d bytes, has %d", ErrImage, img.W, img.H, img.W*img.H*3, len(img.Pix))
	}
	return nil
}

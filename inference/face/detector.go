package face

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
)

// ModelFile is the ONNX file in a detection or recognition folder.
const ModelFile = "model.onnx"

// DetectorOptions configure LoadDetector.
type DetectorOptions struct {
	// Session is passed to every session the detector opens (providers,
	// provider cache folder).
	Session inference.SessionOptions
}

// family is one detector family's pre- and post-processing.
type family interface {
	detect(ctx context.Context, run inference.RunFunc, img *imaging.Image, minScore float32) (*Detections, error)
}

// Detector finds faces and their five landmarks. It is safe for concurrent
// use; Close must not be called while Detect runs.
type Detector struct {
	family   family
	name     string
	sessions []*inference.Session // the detector's first, then the landmark model's
	logger   *slog.Logger
}

// LoadDetector loads the detection model in dir
// (<cache>/facial-recognition/<name>/detection): model.onnx, and the
// family and landmark model named by an optional model.json (default:
// SCRFD, as in Immich's packs). The detector owns the sessions it gets from
// sessions and closes them in Close.
func LoadDetector(dir string, sessions Sessions, opts DetectorOptions, logger *slog.Logger) (*Detector, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := readConfig(dir, true)
	if err != nil {
		return nil, err
	}
	d := &Detector{name: cfg.Family, logger: logger}
	open := func(file string) (*inference.Session, error) {
		s, err := sessions.NewSession(filepath.Join(dir, file), opts.Session)
		if err != nil {
			return nil, err
		}
		d.sessions = append(d.sessions, s)
		return s, nil
	}
	if err := d.build(cfg, open); err != nil {
		return nil, errors.Join(fmt.Errorf("load %s detector from %s: %w", cfg.Family, dir, err), d.Close())
	}
	logger.Debug("face detector loaded", "dir", dir, "family", cfg.Family, "landmarks", cfg.Landmarks, "provider", d.Provider())
	return d, nil
}

func (d *Detector) build(cfg Config, open func(string) (*inference.Session, error)) error {
	main, err := open(ModelFile)
	if err != nil {
		return err
	}
	var lm *landmarker
	if cfg.Landmarks != "" {
		ls, err := open(cfg.Landmarks)
		if err != nil {
			return err
		}
		if lm, err = newLandmarker(ls); err != nil {
			return err
		}
	}
	switch cfg.Family {
	case FamilySCRFD:
		d.family, err = newSCRFD(main)
	case FamilyUltraFace:
		d.family, err = newUltraFace(main, lm)
	case FamilyBlazeFace:
		d.family, err = newBlazeFace(main, lm)
	default:
		err = fmt.Errorf("%w: family %q", ErrConfig, cfg.Family)
	}
	return err
}

// Detect finds the faces in img whose score is at least minScore (Immich's
// minScore option, default 0.7). An image too thin to hold a face after
// resizing gives no faces.
func (d *Detector) Detect(ctx context.Context, img *imaging.Image, minScore float32) (*Detections, error) {
	return d.DetectWith(ctx, inference.Run, img, minScore)
}

// DetectWith is Detect with every model run (the detector's, and the
// landmark model's once per face) made through run.
func (d *Detector) DetectWith(ctx context.Context, run inference.RunFunc, img *imaging.Image, minScore float32) (*Detections, error) {
	if err := checkImage(img); err != nil {
		return nil, err
	}
	dets, err := d.family.detect(ctx, run, img, minScore)
	if err != nil {
		return nil, fmt.Errorf("%s face detection: %w", d.name, err)
	}
	return dets, nil
}

// Family is the detector family ("scrfd", "ultraface", "blazeface").
func (d *Detector) Family() string { return d.name }

// Provider is the execution provider of the detection model.
func (d *Detector) Provider() string {
	if len(d.sessions) == 0 {
		return ""
	}
	return d.sessions[0].Provider()
}

// Close releases the detector's sessions.
func (d *Detector) Close() error {
	var errs []error
	for _, s := range d.sessions {
		errs = append(errs, s.Close())
	}
	d.sessions = nil
	return errors.Join(errs...)
}

package face

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mlserve/mlserve/onnx"
)

// Folder names inside a face model pack.
const (
	DetectionDir   = "detection"
	RecognitionDir = "recognition"
	// LandmarkFile is the name WriteTestPack gives the landmark model.
	LandmarkFile = "landmarks.onnx"
)

// WriteTestPack lays out a face model pack in dir as the model cache holds
// one (<dir>/detection/model.onnx, <dir>/recognition/model.onnx) from the
// model files det, landmark (may be empty) and rec, with the model.json
// files their families need. The families are read off the models'
// interfaces: an NHWC [1,S,S,3] detector is BlazeFace, one with outputs
// "scores" and "boxes" is UltraFace, anything else SCRFD; a recognizer
// whose input is not insightface's "input.1" is MobileFaceNet-type
// ((x−127)/128). Files are hard-linked where possible, else copied; the
// originals are never modified.
//
// It is meant for tests and demos with the real models that ship in npm
// packages (faceplugin's fr_detect/fr_landmark/fr_feature, MediaPipe
// BlazeFace); those carry a vendor's licence and are not Immich's models.
func WriteTestPack(dir, det, landmark, rec string) error {
	detDir := filepath.Join(dir, DetectionDir)
	recDir := filepath.Join(dir, RecognitionDir)
	for _, d := range []string{detDir, recDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	detInfo, err := onnx.Inspect(det)
	if err != nil {
		return err
	}
	cfg := Config{Family: FamilySCRFD}
	switch {
	case isNHWCSquare(detInfo):
		cfg.Family = FamilyBlazeFace
	case hasOutputs(detInfo, "scores", "boxes"):
		cfg.Family = FamilyUltraFace
	}
	if err := linkOrCopy(det, filepath.Join(detDir, ModelFile)); err != nil {
		return err
	}
	if landmark != "" {
		if cfg.Family == FamilySCRFD {
			return fmt.Errorf("%w: SCRFD takes no landmark model", ErrConfig)
		}
		cfg.Landmarks = LandmarkFile
		if err := linkOrCopy(landmark, filepath.Join(detDir, LandmarkFile)); err != nil {
			return err
		}
	}
	if cfg.Family != FamilySCRFD {
		if err := writeJSON(filepath.Join(detDir, ConfigFile), cfg); err != nil {
			return err
		}
	}

	recInfo, err := onnx.Inspect(rec)
	if err != nil {
		return err
	}
	if err := linkOrCopy(rec, filepath.Join(recDir, ModelFile)); err != nil {
		return err
	}
	if len(recInfo.Inputs) > 0 && recInfo.Inputs[0].Name != "input.1" {
		return writeJSON(filepath.Join(recDir, ConfigFile), Config{Family: FamilyMobileFaceNet})
	}
	return nil
}

func isNHWCSquare(info *onnx.Info) bool {
	if len(info.Inputs) != 1 || len(info.Inputs[0].Dims) != 4 {
		return false
	}
	d := info.Inputs[0].Dims
	return d[3].Value == 3 && d[1].Value == d[2].Value && d[1].Value > 3
}

func hasOutputs(info *onnx.Info, names ...string) bool {
	have := map[string]bool{}
	for _, o := range info.Outputs {
		have[o.Name] = true
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// linkOrCopy puts src at dst, replacing what is there.
func linkOrCopy(src, dst string) (err error) {
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}

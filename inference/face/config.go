package face

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// ConfigFile is the name of our optional model.json next to a face model.
const ConfigFile = "model.json"

// Model families.
const (
	FamilySCRFD         = "scrfd"
	FamilyUltraFace     = "ultraface"
	FamilyBlazeFace     = "blazeface"
	FamilyArcFace       = "arcface"
	FamilyMobileFaceNet = "mobilefacenet"
)

// Config is the content of a face model folder's model.json. Every field
// is optional.
type Config struct {
	// Family selects the pre- and post-processing. Detection: "scrfd"
	// (default), "ultraface", "blazeface". Recognition: "arcface"
	// (default), "mobilefacenet".
	Family string `json:"family,omitempty"`
	// Landmarks names a 68-point landmark model file in the same folder
	// (detection only; required by "ultraface", optional for "blazeface").
	Landmarks string `json:"landmarks,omitempty"`
	// Mean and Std override a recognizer's input normalisation,
	// (x−Mean)/Std per RGB channel.
	Mean *float64 `json:"mean,omitempty"`
	Std  *float64 `json:"std,omitempty"`
}

// maxConfigSize bounds model.json; ours are a few dozen bytes.
const maxConfigSize = 64 << 10

// ParseConfig reads a model.json for a detection (detection true) or
// recognition model and checks it.
func ParseConfig(data []byte, detection bool) (Config, error) {
	var c Config
	if len(data) > maxConfigSize {
		return c, fmt.Errorf("%w: %d bytes", ErrConfig, len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: data after the JSON object", ErrConfig)
	}
	c.Family = strings.ToLower(strings.TrimSpace(c.Family))
	if detection {
		switch c.Family {
		case "":
			c.Family = FamilySCRFD
		case FamilySCRFD, FamilyUltraFace, FamilyBlazeFace:
		default:
			return Config{}, fmt.Errorf("%w: unknown detection family %q", ErrConfig, c.Family)
		}
		if c.Mean != nil || c.Std != nil {
			return Config{}, fmt.Errorf("%w: mean/std apply to recognition models only", ErrConfig)
		}
		if c.Landmarks != "" {
			if c.Family == FamilySCRFD {
				return Config{}, fmt.Errorf("%w: SCRFD has its own keypoints, no landmark model", ErrConfig)
			}
			if !validFileName(c.Landmarks) {
				return Config{}, fmt.Errorf("%w: landmark model %q must be a file name in the model's folder", ErrConfig, c.Landmarks)
			}
		} else if c.Family == FamilyUltraFace {
			return Config{}, fmt.Errorf("%w: ultraface needs a landmark model (\"landmarks\")", ErrConfig)
		}
		return c, nil
	}
	switch c.Family {
	case "":
		c.Family = FamilyArcFace
	case FamilyArcFace, FamilyMobileFaceNet:
	default:
		return Config{}, fmt.Errorf("%w: unknown recognition family %q", ErrConfig, c.Family)
	}
	if c.Landmarks != "" {
		return Config{}, fmt.Errorf("%w: landmarks apply to detection models only", ErrConfig)
	}
	if c.Mean != nil && (math.IsNaN(*c.Mean) || math.IsInf(*c.Mean, 0) || math.Abs(*c.Mean) > 1e6) {
		return Config{}, fmt.Errorf("%w: mean %v", ErrConfig, *c.Mean)
	}
	if c.Std != nil && !(*c.Std > 1e-6 && *c.Std < 1e6) {
		return Config{}, fmt.Errorf("%w: std %v must be positive", ErrConfig, *c.Std)
	}
	return c, nil
}

// validFileName accepts a plain file name: no folders, nothing hidden
// that escapes the model's folder.
func validFileName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) < 256 &&
		!strings.ContainsAny(name, `/\`+"\x00") && filepath.Base(name) == name
}

// readConfig reads dir/model.json; a missing file gives the defaults.
func readConfig(dir string, detection bool) (Config, error) {
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return ParseConfig([]byte("{}"), detection)
	}
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c, err := ParseConfig(data, detection)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	return c, nil
}

//go:build !linux

package inference

import (
	"errors"

	ort "github.com/yalue/onnxruntime_go"
)

// sharedWeights is Linux-only (it maps the model file); elsewhere a
// session opened with SplitBatch runs its batches whole.
type sharedWeights struct {
	container *ort.PrepackedWeightsContainer
}

func mapWeights(string) (*sharedWeights, error) {
	return nil, errors.New("shared weights need Linux")
}

func (w *sharedWeights) add(*ort.SessionOptions) error { return nil }
func (w *sharedWeights) drop()                         {}
func (w *sharedWeights) close() error                  { return nil }

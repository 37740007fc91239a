//go:build !linux

package inference

import (
	"errors"

	ort "github.com/yalue/onnxruntime_go"
)

// ortAPI is the OrtApi table of the loaded ONNX Runtime library; only
// Linux builds reach it.
type ortAPI struct{}

func loadORTAPI(string) (ortAPI, error) {
	return ortAPI{}, errors.New("run config entries need Linux")
}

func (ortAPI) addRunConfig(*ort.RunOptions, string, string) error {
	return errors.New("run config entries need Linux")
}

func (ortAPI) runConfig(*ort.RunOptions, string) (string, bool) { return "", false }

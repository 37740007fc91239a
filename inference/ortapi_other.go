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

func (ortAPI) setThreadNice(*ort.SessionOptions, int) error {
	return errors.New("thread priorities need Linux")
}

// NiceThread is a no-op where thread priorities are not per thread.
func NiceThread(int) error { return nil }

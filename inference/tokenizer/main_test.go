package tokenizer_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

var tempDirs []string

// mkdirTemp makes a folder that lives as long as the test binary (shared
// fixtures built once), removed by TestMain.
func mkdirTemp() (string, error) {
	d, err := os.MkdirTemp("", "tokenizer-test-")
	if err == nil {
		tempDirs = append(tempDirs, d)
	}
	return d, err
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		for _, d := range tempDirs {
			os.RemoveAll(d)
		}
		os.Exit(code)
	}))
}

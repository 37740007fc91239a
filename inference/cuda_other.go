//go:build !linux

package inference

import "fmt"

const cudaDriverLibrary = "libcuda.so.1"

// cudaDriver reads device memory through the CUDA driver API; only Linux
// builds have it.
type cudaDriver struct{}

func openCUDADriver(string) *cudaDriver { return &cudaDriver{} }

func (*cudaDriver) count() (int, error) {
	return 0, fmt.Errorf("%w: CUDA memory needs Linux", ErrMemoryUnknown)
}

func (*cudaDriver) name(int) (string, error) {
	return "", fmt.Errorf("%w: CUDA memory needs Linux", ErrMemoryUnknown)
}

func (*cudaDriver) memory(int) (Memory, error) {
	return Memory{}, fmt.Errorf("%w: CUDA memory needs Linux", ErrMemoryUnknown)
}

func (*cudaDriver) close() error { return nil }

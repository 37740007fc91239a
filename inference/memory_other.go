//go:build !linux

package inference

// ReleaseMemory is a no-op where glibc's malloc_trim is not available.
func ReleaseMemory() {}

// CHeapBytes is unknown (-1) where glibc's mallinfo2 is not available.
func CHeapBytes() int64 { return -1 }

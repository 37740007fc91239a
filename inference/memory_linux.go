package inference

/*
#include <malloc.h>
*/
import "C"

// ReleaseMemory hands memory that freed sessions left in the C heap back to
// the operating system (glibc's malloc_trim). Without it, the resident set
// of a process that unloaded a model often stays where it was.
func ReleaseMemory() { C.malloc_trim(0) }

// CHeapBytes is how much the C heap (ONNX Runtime, OpenCV, libjpeg) has
// allocated and not freed, from glibc's mallinfo2: the bytes in use in all
// malloc arenas plus mmapped blocks. Unlike the resident set it does not
// depend on what the allocator keeps cached, so it shows a leak of a few
// bytes per inference.
func CHeapBytes() int64 {
	mi := C.mallinfo2()
	return int64(mi.uordblks) + int64(mi.hblkhd)
}

package inference

/*
#include <malloc.h>
*/
import "C"

// ReleaseMemory hands memory that freed sessions left in the C heap back to
// the operating system (glibc's malloc_trim). Without it, the resident set
// of a process that unloaded a model often stays where it was.
func ReleaseMemory() { C.malloc_trim(0) }

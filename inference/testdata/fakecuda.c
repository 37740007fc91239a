// fakecuda.c is a stand-in for the CUDA driver library (libcuda.so.1) in
// tests of inference's driver calls on machines without a GPU: it exports
// the driver API entry points mlserve uses and reports two devices with
// fixed memory figures. It is not a GPU and does nothing else.
#include <stddef.h>
#include <string.h>

static int initialized;
static int current = -1;      // device of the current context, -1: none
static int retained[2];

static const size_t totals[2] = {(size_t)24 << 30, (size_t)80 << 30};
static const size_t frees[2] = {(size_t)20 << 30, (size_t)79 << 30};

int cuInit(unsigned int flags) { (void)flags; initialized = 1; return 0; }
int cuDeviceGetCount(int* n) { if (!initialized) return 3; *n = 2; return 0; }
int cuDeviceGet(int* d, int ordinal) {
	if (!initialized) return 3;
	if (ordinal < 0 || ordinal > 1) return 101; // CUDA_ERROR_INVALID_DEVICE
	*d = ordinal;
	return 0;
}
int cuDeviceGetName(char* buf, int len, int d) {
	strncpy(buf, d == 0 ? "Fake GPU Zero" : "Fake GPU One", (size_t)len);
	return 0;
}
int cuDeviceTotalMem_v2(size_t* b, int d) { *b = totals[d]; return 0; }
int cuDevicePrimaryCtxRetain(void** ctx, int d) { retained[d]++; *ctx = (void*)&retained[d]; return 0; }
int cuDevicePrimaryCtxRelease_v2(int d) { retained[d]--; return 0; }
int cuCtxPushCurrent_v2(void* ctx) { current = ctx == (void*)&retained[0] ? 0 : 1; return 0; }
int cuCtxPopCurrent_v2(void** ctx) { *ctx = NULL; current = -1; return 0; }
int cuMemGetInfo_v2(size_t* f, size_t* t) {
	if (current < 0) return 201; // CUDA_ERROR_INVALID_CONTEXT
	*f = frees[current];
	*t = totals[current];
	return 0;
}
int cuGetErrorName(int r, const char** s) {
	*s = r == 101 ? "CUDA_ERROR_INVALID_DEVICE" : r == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : "CUDA_ERROR_UNKNOWN";
	return 0;
}
// retainedCount lets the test check that close released every context.
int retainedCount(void) { return retained[0] + retained[1]; }

package inference

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

// The CUDA driver API (libcuda.so.1, which every NVIDIA driver installs
// and the NVIDIA container runtime mounts), opened with dlopen so that the
// binary neither links nor needs it. Only memory figures are read; device
// ordinals follow CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER exactly as
// ONNX Runtime's CUDA provider sees them.
typedef int mls_CUresult;
typedef int mls_CUdevice;
typedef void* mls_CUcontext;

typedef struct {
	void* h;
	mls_CUresult (*init)(unsigned int);
	mls_CUresult (*count)(int*);
	mls_CUresult (*get)(mls_CUdevice*, int);
	mls_CUresult (*name)(char*, int, mls_CUdevice);
	mls_CUresult (*total)(size_t*, mls_CUdevice);
	mls_CUresult (*retain)(mls_CUcontext*, mls_CUdevice);
	mls_CUresult (*release)(mls_CUdevice);
	mls_CUresult (*push)(mls_CUcontext);
	mls_CUresult (*pop)(mls_CUcontext*);
	mls_CUresult (*meminfo)(size_t*, size_t*);
	mls_CUresult (*errname)(mls_CUresult, const char**);
} mls_cuda;

// mls_cuda_open loads the driver library and cuInit's it. It returns 0,
// -1 when the library is missing, -2 when a symbol is missing, or
// cuInit's error.
static int mls_cuda_open(mls_cuda* c, const char* lib) {
	c->h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (c->h == NULL) return -1;
#define MLS_SYM(f, s) if ((*(void**)(&c->f) = dlsym(c->h, s)) == NULL) { dlclose(c->h); c->h = NULL; return -2; }
	MLS_SYM(init, "cuInit")
	MLS_SYM(count, "cuDeviceGetCount")
	MLS_SYM(get, "cuDeviceGet")
	MLS_SYM(name, "cuDeviceGetName")
	MLS_SYM(total, "cuDeviceTotalMem_v2")
	MLS_SYM(retain, "cuDevicePrimaryCtxRetain")
	MLS_SYM(release, "cuDevicePrimaryCtxRelease_v2")
	MLS_SYM(push, "cuCtxPushCurrent_v2")
	MLS_SYM(pop, "cuCtxPopCurrent_v2")
	MLS_SYM(meminfo, "cuMemGetInfo_v2")
	MLS_SYM(errname, "cuGetErrorName")
#undef MLS_SYM
	mls_CUresult r = c->init(0);
	if (r != 0) { dlclose(c->h); c->h = NULL; }
	return r;
}

static void mls_cuda_close(mls_cuda* c) {
	if (c->h != NULL) dlclose(c->h);
	c->h = NULL;
}

static const char* mls_cuda_errname(mls_cuda* c, mls_CUresult r) {
	const char* s = NULL;
	if (c->h == NULL || c->errname(r, &s) != 0) return NULL;
	return s;
}

static mls_CUresult mls_cuda_count(mls_cuda* c, int* n) { return c->count(n); }

static mls_CUresult mls_cuda_name(mls_cuda* c, int ordinal, char* buf, int len) {
	mls_CUdevice d;
	mls_CUresult r = c->get(&d, ordinal);
	if (r != 0) return r;
	return c->name(buf, len, d);
}

// mls_cuda_mem reads the free and total memory of a device. cuMemGetInfo
// needs a current context: the device's primary context (the one ONNX
// Runtime's CUDA provider uses too) is retained once, in *ctx, and made
// current on this thread for the call only.
static mls_CUresult mls_cuda_mem(mls_cuda* c, int ordinal, mls_CUcontext* ctx, size_t* free, size_t* total) {
	mls_CUdevice d;
	mls_CUresult r = c->get(&d, ordinal);
	if (r != 0) return r;
	if (*ctx == NULL) {
		r = c->retain(ctx, d);
		if (r != 0) { *ctx = NULL; return r; }
	}
	r = c->push(*ctx);
	if (r != 0) return r;
	r = c->meminfo(free, total);
	mls_CUcontext prev;
	c->pop(&prev);
	return r;
}

static void mls_cuda_release(mls_cuda* c, int ordinal) {
	mls_CUdevice d;
	if (c->get(&d, ordinal) == 0) c->release(d);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// cudaDriverLibrary is the CUDA driver's soname.
const cudaDriverLibrary = "libcuda.so.1"

// cudaDriver reads device memory through the CUDA driver API. It is safe
// for concurrent use.
type cudaDriver struct {
	mu   sync.Mutex
	c    *C.mls_cuda
	ctxs map[int]C.mls_CUcontext // retained primary contexts, by ordinal
	err  error                   // why the driver could not be opened
}

// openCUDADriver loads the driver library lib. A missing library or a
// failing cuInit gives a driver whose every call returns the reason.
func openCUDADriver(lib string) *cudaDriver {
	d := &cudaDriver{ctxs: map[int]C.mls_CUcontext{}}
	c := (*C.mls_cuda)(C.calloc(1, C.size_t(unsafe.Sizeof(C.mls_cuda{}))))
	cs := C.CString(lib)
	defer C.free(unsafe.Pointer(cs))
	switch r := C.mls_cuda_open(c, cs); r {
	case 0:
		d.c = c
		return d
	case -1:
		d.err = fmt.Errorf("%w: no CUDA driver library (%s)", ErrMemoryUnknown, lib)
	case -2:
		d.err = fmt.Errorf("%w: %s lacks the driver API's memory calls", ErrMemoryUnknown, lib)
	default:
		d.err = fmt.Errorf("%w: cuInit: CUDA driver error %d", ErrMemoryUnknown, int(r))
	}
	C.free(unsafe.Pointer(c))
	return d
}

func (d *cudaDriver) fail(call string, r C.mls_CUresult) error {
	if name := C.mls_cuda_errname(d.c, r); name != nil {
		return fmt.Errorf("%w: %s: %s", ErrMemoryUnknown, call, C.GoString(name))
	}
	return fmt.Errorf("%w: %s: CUDA driver error %d", ErrMemoryUnknown, call, int(r))
}

// count is the number of CUDA devices the process sees.
func (d *cudaDriver) count() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return 0, d.err
	}
	var n C.int
	if r := C.mls_cuda_count(d.c, &n); r != 0 {
		return 0, d.fail("cuDeviceGetCount", r)
	}
	return int(n), nil
}

// name is the device's product name ("NVIDIA H200").
func (d *cudaDriver) name(ordinal int) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return "", d.err
	}
	buf := make([]byte, 256)
	if r := C.mls_cuda_name(d.c, C.int(ordinal), (*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf))); r != 0 {
		return "", d.fail("cuDeviceGetName", r)
	}
	return C.GoString((*C.char)(unsafe.Pointer(&buf[0]))), nil
}

// memory reads a device's total and free memory.
func (d *cudaDriver) memory(ordinal int) (Memory, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return Memory{}, d.err
	}
	ctx := d.ctxs[ordinal]
	var free, total C.size_t
	r := C.mls_cuda_mem(d.c, C.int(ordinal), &ctx, &free, &total)
	if ctx != nil {
		d.ctxs[ordinal] = ctx
	}
	if r != 0 {
		return Memory{}, d.fail("cuMemGetInfo", r)
	}
	return Memory{Total: int64(total), Free: int64(free)}, nil
}

// close releases the retained contexts and the library.
func (d *cudaDriver) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return nil
	}
	for ordinal := range d.ctxs {
		C.mls_cuda_release(d.c, C.int(ordinal))
	}
	d.ctxs = nil
	C.mls_cuda_close(d.c)
	C.free(unsafe.Pointer(d.c))
	d.c = nil
	d.err = errors.New("CUDA driver closed")
	return nil
}

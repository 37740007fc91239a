package inference

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// onnxruntime_go v1.27 does not wrap OrtApi::AddRunConfigEntry, which the
// arena shrinkage run option needs. The OrtApi struct is a table of
// function pointers whose order never changes (ONNX Runtime only appends),
// so the entries are taken by index; the indices are those of
// onnxruntime_c_api.h (offsetof(OrtApi, X) / sizeof(void*)), and
// TestRunConfigEntry checks them against the library.
enum {
	mls_GetErrorMessage = 2,
	mls_ReleaseStatus = 93,
	mls_AddRunConfigEntry = 165,
	mls_SessionOptionsSetCustomCreateThreadFn = 196,
	mls_SessionOptionsSetCustomThreadCreationOptions = 197,
	mls_SessionOptionsSetCustomJoinThreadFn = 198,
	mls_GetRunConfigEntry = 373, // since API 23 (ONNX Runtime 1.23)
};

typedef struct { const void* (*GetApi)(uint32_t version); const char* (*GetVersionString)(void); } mls_api_base;
typedef void* (*mls_add_fn)(void*, const char*, const char*);
typedef const char* (*mls_msg_fn)(const void*);
typedef void (*mls_release_fn)(void*);
typedef const char* (*mls_get_fn)(const void*, const char*);

// mls_ort_api returns the OrtApi table of the library already loaded from
// path (RTLD_NOLOAD: it never loads a second copy), or NULL.
static const void* mls_ort_api(const char* path, uint32_t version) {
	void* h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	if (h == NULL) return NULL;
	const mls_api_base* (*get_base)(void) = (const mls_api_base* (*)(void))dlsym(h, "OrtGetApiBase");
	const void* api = NULL;
	if (get_base != NULL) {
		const mls_api_base* base = get_base();
		if (base != NULL) api = base->GetApi(version);
	}
	dlclose(h); // drops the reference taken above; the library stays loaded
	return api;
}

// mls_add_run_config calls AddRunConfigEntry; on failure it returns a
// malloc'd copy of ONNX Runtime's message.
static char* mls_add_run_config(const void* api, void* ro, const char* key, const char* value) {
	void* const* t = (void* const*)api;
	void* st = ((mls_add_fn)t[mls_AddRunConfigEntry])(ro, key, value);
	if (st == NULL) return NULL;
	char* msg = strdup(((mls_msg_fn)t[mls_GetErrorMessage])(st));
	((mls_release_fn)t[mls_ReleaseStatus])(st);
	return msg;
}

// mls_nice_self lowers the calling thread's scheduling priority to nice
// (Linux priorities are per thread); it returns errno or 0.
static int mls_nice_self(int nice) {
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) != 0) return errno;
	return 0;
}

// ONNX Runtime's intra-op pool threads, made by mls_create_thread: plain
// pthreads that lower their own priority to the nice value passed as the
// creation options before they run ONNX Runtime's worker loop.
typedef struct { void (*fn)(void*); void* param; int nice; } mls_thread_start;

static void* mls_thread_main(void* arg) {
	mls_thread_start s = *(mls_thread_start*)arg;
	free(arg);
	(void)mls_nice_self(s.nice); // best effort: a thread that cannot is still a worker
	s.fn(s.param);
	return NULL;
}

static const void* mls_create_thread(void* options, void (*fn)(void*), void* param) {
	mls_thread_start* s = malloc(sizeof *s);
	pthread_t* t = malloc(sizeof *t);
	if (s == NULL || t == NULL) { free(s); free(t); return NULL; } // ONNX Runtime fails the session
	s->fn = fn; s->param = param; s->nice = (int)(intptr_t)options;
	if (pthread_create(t, NULL, mls_thread_main, s) != 0) { free(s); free(t); return NULL; }
	return t;
}

static void mls_join_thread(const void* handle) {
	pthread_t* t = (pthread_t*)handle;
	pthread_join(*t, NULL);
	free(t);
}

typedef void* (*mls_set_ptr_fn)(void*, void*);

// mls_set_thread_fns makes the session's pool threads with
// mls_create_thread at the given nice value; a malloc'd message on failure.
static char* mls_set_thread_fns(const void* api, void* so, int nice) {
	void* const* t = (void* const*)api;
	void* st = ((mls_set_ptr_fn)t[mls_SessionOptionsSetCustomCreateThreadFn])(so, (void*)mls_create_thread);
	if (st == NULL) st = ((mls_set_ptr_fn)t[mls_SessionOptionsSetCustomThreadCreationOptions])(so, (void*)(intptr_t)nice);
	if (st == NULL) st = ((mls_set_ptr_fn)t[mls_SessionOptionsSetCustomJoinThreadFn])(so, (void*)mls_join_thread);
	if (st == NULL) return NULL;
	char* msg = strdup(((mls_msg_fn)t[mls_GetErrorMessage])(st));
	((mls_release_fn)t[mls_ReleaseStatus])(st);
	return msg;
}

static const char* mls_get_run_config(const void* api, void* ro, const char* key) {
	void* const* t = (void* const*)api;
	return ((mls_get_fn)t[mls_GetRunConfigEntry])(ro, key);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// ortAPI is the OrtApi table of the loaded ONNX Runtime library, for the
// few calls onnxruntime_go does not wrap.
type ortAPI struct{ p unsafe.Pointer }

// loadORTAPI finds the table of the library that onnxruntime_go loaded
// from path. API version 14 (ONNX Runtime 1.14) has every entry used here
// but GetRunConfigEntry.
func loadORTAPI(path string) (ortAPI, error) {
	if path == "" {
		path = "onnxruntime.so" // onnxruntime_go's default
	}
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	p := C.mls_ort_api(cs, 14)
	if p == nil {
		return ortAPI{}, fmt.Errorf("cannot find the OrtApi table of %s", path)
	}
	return ortAPI{p: unsafe.Pointer(p)}, nil
}

// runOptionsPtr is the OrtRunOptions* inside onnxruntime_go's RunOptions,
// whose only field it is (v1.27; TestRunConfigEntry reads it back).
func runOptionsPtr(ro *ort.RunOptions) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(ro))
}

// addRunConfig sets a run option's config entry (AddRunConfigEntry).
func (a ortAPI) addRunConfig(ro *ort.RunOptions, key, value string) error {
	if a.p == nil {
		return errors.New("the OrtApi table is not loaded")
	}
	ck, cv := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(ck))
	defer C.free(unsafe.Pointer(cv))
	if msg := C.mls_add_run_config(a.p, runOptionsPtr(ro), ck, cv); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return fmt.Errorf("run option %s=%s: %s", key, value, C.GoString(msg))
	}
	return nil
}

// runConfig reads a run option's config entry back (GetRunConfigEntry,
// ONNX Runtime 1.23 and later; for tests).
func (a ortAPI) runConfig(ro *ort.RunOptions, key string) (string, bool) {
	if a.p == nil {
		return "", false
	}
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	v := C.mls_get_run_config(a.p, runOptionsPtr(ro), ck)
	if v == nil {
		return "", false
	}
	return C.GoString(v), true
}

// sessionOptionsPtr is the OrtSessionOptions* inside onnxruntime_go's
// SessionOptions, whose only field it is (v1.27).
func sessionOptionsPtr(so *ort.SessionOptions) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(so))
}

// setThreadNice makes the session's intra-op pool threads run at the given
// nice value (SessionOptionsSetCustomCreateThreadFn and its two partners).
func (a ortAPI) setThreadNice(so *ort.SessionOptions, nice int) error {
	if a.p == nil {
		return errors.New("the OrtApi table is not loaded")
	}
	if msg := C.mls_set_thread_fns(a.p, sessionOptionsPtr(so), C.int(nice)); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return fmt.Errorf("custom thread creation: %s", C.GoString(msg))
	}
	return nil
}

// NiceThread lowers the scheduling priority of the calling OS thread to
// nice (Linux keeps priorities per thread). The caller must hold the thread
// (runtime.LockOSThread) and never give it back: raising the priority again
// needs privileges, so the thread has to end with its goroutine.
func NiceThread(nice int) error {
	if e := C.mls_nice_self(C.int(nice)); e != 0 {
		return fmt.Errorf("setpriority %d: %w", nice, syscall.Errno(e))
	}
	return nil
}

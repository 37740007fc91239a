package inference

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static const char* mls_get_run_config(const void* api, void* ro, const char* key) {
	void* const* t = (void* const*)api;
	return ((mls_get_fn)t[mls_GetRunConfigEntry])(ro, key);
}
*/
import "C"

import (
	"errors"
	"fmt"
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

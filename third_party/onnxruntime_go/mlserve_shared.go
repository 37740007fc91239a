package onnxruntime_go

// mlserve: sessions that share their weights. Not part of upstream
// onnxruntime_go v1.27.0; see ../README.md.

// #include <stdlib.h>
// #include "onnxruntime_wrapper.h"
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// PrepackedWeightsContainer holds the pre-packed copies of initializers
// that sessions share (OrtPrepackedWeightsContainer): the first session
// built with it packs each shared initializer (AddInitializer), later ones
// reuse the packed copy instead of making their own. It must be destroyed
// only after every session that uses it.
type PrepackedWeightsContainer struct {
	c *C.OrtPrepackedWeightsContainer
}

// NewPrepackedWeightsContainer makes an empty container.
func NewPrepackedWeightsContainer() (*PrepackedWeightsContainer, error) {
	if !IsInitialized() {
		return nil, NotInitializedError
	}
	var c *C.OrtPrepackedWeightsContainer
	if status := C.CreatePrepackedWeightsContainer(&c); status != nil {
		return nil, fmt.Errorf("Error creating prepacked weights container: %w", statusToError(status))
	}
	return &PrepackedWeightsContainer{c: c}, nil
}

// Destroy releases the container.
func (p *PrepackedWeightsContainer) Destroy() error {
	if p.c != nil {
		C.ReleasePrepackedWeightsContainer(p.c)
		p.c = nil
	}
	return nil
}

// AddInitializer makes sessions built with these options use v for the
// model's initializer called name instead of reading it from the model
// (OrtApi::AddInitializer). v and its data must outlive those sessions.
func (o *SessionOptions) AddInitializer(name string, v Value) error {
	if v == nil {
		return errors.New("AddInitializer: nil value")
	}
	cName := C.CString(name)
	defer C.free(unsafe.Pointer(cName))
	if status := C.AddSessionInitializer(o.o, cName, v.GetInternals().ortValue); status != nil {
		return fmt.Errorf("Error adding initializer %s: %w", name, statusToError(status))
	}
	return nil
}

// NewDynamicAdvancedSessionWithPrepackedWeights is NewDynamicAdvancedSession
// with a container for the pre-packed weights of the initializers that the
// options share (OrtApi::CreateSessionWithPrepackedWeightsContainer).
func NewDynamicAdvancedSessionWithPrepackedWeights(onnxFilePath string, inputNames,
	outputNames []string, options *SessionOptions,
	container *PrepackedWeightsContainer) (*DynamicAdvancedSession, error) {
	if container == nil || container.c == nil {
		return NewDynamicAdvancedSession(onnxFilePath, inputNames, outputNames, options)
	}
	s, e := newAdvancedSessionInternal(inputNames, outputNames, nil, nil, true)
	if e != nil {
		return nil, fmt.Errorf("Error creating internal AdvancedSession: %w", e)
	}
	cPath, e := createOrtCharString(onnxFilePath)
	if e != nil {
		s.Destroy()
		return nil, fmt.Errorf("Unable to convert path to C path: %w", e)
	}
	defer C.free(unsafe.Pointer(cPath))
	var ortSessionOptions *C.OrtSessionOptions
	if options != nil {
		ortSessionOptions = options.o
	}
	status := C.CreateSessionFromFileWithPrepackedWeights(cPath, ortEnv, &s.ortSession,
		ortSessionOptions, container.c)
	if status != nil {
		s.Destroy()
		return nil, fmt.Errorf("Error creating C session from file: %w", statusToError(status))
	}
	return &DynamicAdvancedSession{s: s}, nil
}

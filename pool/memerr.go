package pool

import (
	"errors"

	"github.com/mlserve/mlserve/inference"
)

// DeviceMemoryError is a model that cannot load or run on a device for
// want of memory: the device ran out (after the idle models there were
// unloaded and the load or run tried once more, with the CPU fallback
// off), or no device's memory or budget can take the model at all. It
// wraps inference.ErrOutOfMemory, and the device's *inference.DeviceError
// or ErrOverBudget where there is one, so errors.Is and errors.As see
// through it; its fields are the figures an operator needs, without the
// model's path.
type DeviceMemoryError struct {
	// Key is the model.
	Key Key
	// Op is "load" or "run".
	Op string
	// Device is the device that ran out ("CUDA:0"), or the one that came
	// closest to taking the model.
	Device string
	// Need is what the model needs there, in bytes: the estimate of its
	// load (what it took last time, or its files' size × LoadFactor), or
	// for a run the allocation that failed; 0 when unknown.
	Need int64
	// Free and Total are the device's memory when the failure was seen;
	// both 0 when the device cannot tell.
	Free, Total int64
	// Budget is the per-device memory budget (DeviceOptions.Budget) when
	// it is what keeps the model out; 0 otherwise. BudgetLeft is what the
	// budget left on Device.
	Budget, BudgetLeft int64

	msg string
	err error
}

func (e *DeviceMemoryError) Error() string { return e.msg }

// Unwrap returns the cause: it wraps inference.ErrOutOfMemory.
func (e *DeviceMemoryError) Unwrap() error { return e.err }

// memoryError builds a DeviceMemoryError whose message and cause are
// err's; the device's figures are read from err's *inference.DeviceError
// when the caller left them zero.
func memoryError(err error, key Key, op, device string, need int64) *DeviceMemoryError {
	e := &DeviceMemoryError{Key: key, Op: op, Device: device, Need: need, msg: err.Error(), err: err}
	var derr *inference.DeviceError
	if errors.As(err, &derr) {
		if e.Device == "" {
			e.Device = derr.Device
		}
		e.Free, e.Total = derr.Free, derr.Total
		if e.Need == 0 {
			e.Need = derr.Requested
		}
	}
	return e
}

// withMemory fills in d's memory figures.
func (e *DeviceMemoryError) withMemory(d *inference.Device) *DeviceMemoryError {
	if d == nil {
		return e
	}
	if m, err := d.Memory(); err == nil {
		e.Free, e.Total = m.Free, m.Total
	}
	return e
}

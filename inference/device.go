package inference

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ErrMemoryUnknown: the device cannot report its memory (an OpenVINO GPU
// or NPU, or a CUDA device whose driver library cannot be opened).
var ErrMemoryUnknown = errors.New("device memory unknown")

// Memory is a device's memory, in bytes.
type Memory struct {
	Total, Free int64
}

// Used is Total - Free.
func (m Memory) Used() int64 { return m.Total - m.Free }

func (m Memory) String() string {
	return FormatBytes(m.Free) + " free of " + FormatBytes(m.Total)
}

// Device is one place sessions run on: the host CPU ("CPU"), a CUDA GPU
// ("CUDA:0", for the CUDA and the TensorRT provider alike), an OpenVINO
// device ("OpenVINO:GPU.0", "OpenVINO:CPU", "OpenVINO:NPU"), or in tests a
// [FakeDevice] ("FakeGPU:0"). A Runtime makes its devices once, at start,
// from the configured providers that are usable; see [Runtime.Devices].
type Device struct {
	name     string
	provider string
	id       int    // CUDA ordinal; FakeDevices index
	ovType   string // OpenVINO device_type
	fake     *FakeDevice
	cuda     *cudaDriver
	// arena is the memory arena shrinkage names ("gpu:0", "cpu:0"), or ""
	// when the device's sessions have none.
	arena string
	// loadMu serialises loads on the device, so that the memory a load
	// takes can be told from the device's free memory.
	loadMu sync.Mutex
}

// Name is the device's name ("CUDA:1"), which SessionOptions.Device takes.
func (d *Device) Name() string { return d.name }

// String is Name.
func (d *Device) String() string { return d.name }

// Provider is the execution provider of the device's sessions.
func (d *Device) Provider() string { return d.provider }

// Host tells whether the device's sessions compute on the host's cores
// (the CPU provider, or OpenVINO's CPU device), which they share with
// every other CPU session.
func (d *Device) Host() bool {
	return d.provider == CPU || (d.provider == OpenVINO && d.ovType == OpenVINOCPU)
}

// Fake tells whether the device is a [FakeDevice]: no hardware behind it.
func (d *Device) Fake() bool { return d.fake != nil }

// Memory reads the device's total and free memory: the host's (within the
// process's cgroup limit) for host devices, the CUDA driver's for CUDA
// devices, the simulated figures of a FakeDevice. OpenVINO's GPU and NPU
// devices return ErrMemoryUnknown.
func (d *Device) Memory() (Memory, error) {
	switch {
	case d.fake != nil:
		return d.fake.Memory(), nil
	case d.Host():
		return hostMemory()
	case d.cuda != nil:
		return d.cuda.memory(d.id)
	}
	return Memory{}, fmt.Errorf("%w: %s does not report its memory", ErrMemoryUnknown, d.name)
}

// measured tells whether loads on d are measured through Memory (the
// device's memory is its own, so a load's share can be told).
func (d *Device) measured() bool { return d.fake == nil && d.cuda != nil && !d.Host() }

// hostMemory reads MemTotal and MemAvailable, bounded by the cgroup v2
// limit of the process when it has one (a container's memory limit).
func hostMemory() (Memory, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return Memory{}, fmt.Errorf("%w: %w", ErrMemoryUnknown, err)
	}
	var m Memory
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			m.Total = kb << 10
		case "MemAvailable:":
			m.Free = kb << 10
		}
	}
	if m.Total == 0 {
		return Memory{}, fmt.Errorf("%w: no MemTotal in /proc/meminfo", ErrMemoryUnknown)
	}
	if limit, ok := cgroupValue("memory.max"); ok && limit < m.Total {
		m.Total = limit
		if cur, ok := cgroupValue("memory.current"); ok {
			m.Free = min(m.Free, max(0, limit-cur))
		}
	}
	return m, nil
}

// cgroupValue reads a number from the process's cgroup v2 folder.
func cgroupValue(file string) (int64, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	// cgroup v2: one line "0::/path".
	path := ""
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			path = rest
		}
	}
	v, err := os.ReadFile("/sys/fs/cgroup" + path + "/" + file) //nolint:gosec // G703: the path comes from /proc/self/cgroup (the kernel), not from a user
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	return n, err == nil && n > 0
}

// ProviderState is what the start-up probe found out about one configured
// execution provider.
type ProviderState struct {
	Provider string
	// Devices are the provider's usable devices.
	Devices []string
	// Err is why the provider, or some of its devices, cannot be used:
	// nil when every device works, wrapping ErrNotBuilt when this ONNX
	// Runtime build lacks it, errNotTried when an earlier provider in the
	// list is used.
	Err error
}

// Usable tells whether the provider has at least one usable device.
func (s ProviderState) Usable() bool { return len(s.Devices) > 0 }

// errNotTried is the state of providers after the one in use: they are not
// probed (that would load their libraries for nothing).
var errNotTried = errors.New("not tried: an earlier provider in the list is used")

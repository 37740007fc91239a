package inference

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// minSharedWeight is the smallest initializer that sessions share: below
// it, a second copy costs less than the bookkeeping.
const minSharedWeight = 64 << 10

// sharedWeights lets several sessions of one model file hold one copy of
// its large initializers. The file is mapped read-only and every float32
// initializer of at least minSharedWeight bytes is handed to the sessions
// as theirs (AddInitializer), so that none reads its own copy; the
// sessions' CPU kernels pre-pack them once, into a shared container.
// Once the sessions are built, the mapped pages are dropped (drop): a
// kernel that packed a weight never reads the original again, and one
// that does reads it back from the file, so the process keeps about one
// copy of the weights, the packed one, however many sessions share it.
// The file must not be rewritten in place while the sessions live (the
// model store writes a new file and renames it over the old one, which
// leaves the mapping on the old file).
type sharedWeights struct {
	data      []byte
	names     []string
	values    []ort.Value
	container *ort.PrepackedWeightsContainer
}

// mapWeights maps path's large initializers. It fails when the file has
// none worth sharing.
func mapWeights(path string) (w *sharedWeights, err error) {
	ws, err := onnx.Weights(path, minSharedWeight)
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("%s has no float initializers of %d bytes or more in the file", path, minSharedWeight)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() <= 0 || int64(int(st.Size())) != st.Size() {
		return nil, fmt.Errorf("%s: cannot map %d bytes", path, st.Size())
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	w = &sharedWeights{data: data}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	for _, x := range ws {
		if x.Offset < 0 || x.Offset+x.Size > int64(len(data)) {
			return nil, fmt.Errorf("%w: %s: initializer %s lies outside the file", onnx.ErrInvalid, path, x.Name)
		}
		v, err := ort.NewCustomDataTensor(ort.NewShape(x.Dims...), data[x.Offset:x.Offset+x.Size:x.Offset+x.Size], ort.TensorElementDataTypeFloat)
		if err != nil {
			return nil, fmt.Errorf("initializer %s: %w", x.Name, err)
		}
		w.names = append(w.names, x.Name)
		w.values = append(w.values, v)
	}
	if w.container, err = ort.NewPrepackedWeightsContainer(); err != nil {
		return nil, err
	}
	return w, nil
}

// add makes sessions built with so use the shared initializers.
func (w *sharedWeights) add(so *ort.SessionOptions) error {
	for i, name := range w.names {
		if err := so.AddInitializer(name, w.values[i]); err != nil {
			return err
		}
	}
	return nil
}

// drop gives the mapped pages back (MADV_DONTNEED); they stay valid and
// are read from the file again if a session touches them.
func (w *sharedWeights) drop() {
	_ = syscall.Madvise(w.data, syscall.MADV_DONTNEED)
}

// close releases the initializers, the container and the mapping; every
// session that shares them must be destroyed first.
func (w *sharedWeights) close() error {
	var err error
	for _, v := range w.values {
		err = errors.Join(err, v.Destroy())
	}
	w.values = nil
	if w.container != nil {
		err = errors.Join(err, w.container.Destroy())
		w.container = nil
	}
	if w.data != nil {
		err = errors.Join(err, syscall.Munmap(w.data))
		w.data = nil
	}
	return err
}

package imaging

import "sync"

// Buffers recycles the pixel buffers of decoded images. A preview-size
// photo decodes to 9 MB; allocating that afresh for every request makes
// the Go heap grow and shrink by tens of megabytes a second, which costs
// a garbage collection every few images (each one stalling the goroutines
// that allocate), the zeroing of every buffer and the page faults of
// fresh memory. An image whose owner knows nothing else reads it any more
// gives its buffer back with Put; the next decode of that size or smaller
// takes it. The zero value is ready; a nil *Buffers allocates every time.
type Buffers struct{ p sync.Pool }

// get returns a buffer of n bytes, recycled when one is large enough. Its
// contents are arbitrary: only decoders that write every byte use it.
func (b *Buffers) get(n int) []byte {
	if b != nil {
		if v, ok := b.p.Get().(*[]byte); ok && cap(*v) >= n {
			return (*v)[:n]
		}
		// A buffer too small is dropped: sizes of one library are close,
		// so the pool soon holds the larger ones.
	}
	return make([]byte, n)
}

// put gives a buffer back.
func (b *Buffers) put(buf []byte) {
	if b == nil || cap(buf) == 0 {
		return
	}
	b.p.Put(&buf)
}

// Put gives img's pixels back for a later decode. The caller must be the
// image's only user: img must not be read after Put (its Pix is cleared).
func (b *Buffers) Put(img *Image) {
	if img == nil {
		return
	}
	b.put(img.Pix)
	img.Pix = nil
}

package api

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"mime"
	"mime/multipart"
	"strings"
	"sync"
)

// Size caps of the form fields, whether a client sends a field as a plain
// part or as a file part. The image is capped by the body limit.
const (
	// maxEntriesBytes caps the entries JSON; Immich's is under 400 bytes.
	maxEntriesBytes = 64 << 10
	// maxTextBytes caps a CLIP query; the text encoders keep 64 to 77
	// tokens, which real queries reach in well under 1 KiB.
	maxTextBytes = 64 << 10
	// maxSmallFieldBytes caps the other fields that a route reads (the
	// limit of /search).
	maxSmallFieldBytes = 1 << 10
	// maxSkippedPartBytes caps each part that no route reads (an unknown
	// field, a repeated one), which is read and dropped.
	maxSkippedPartBytes = 1 << 20
	// maxParts caps the parts of a form; Immich sends two.
	maxParts = 32
)

// Errors of reading a form, on top of the body's.
var (
	// errNotForm: the body is not multipart/form-data, or its multipart
	// structure is broken.
	errNotForm = errors.New("not a multipart form")
	// errFieldTooLarge is wrapped with the field's name.
	errFieldTooLarge = errors.New("form field too large")
	// errTooManyParts: more than maxParts parts.
	errTooManyParts = errors.New("too many form parts")
)

// formField is what a form held for one field name: the first plain part
// and the first file part, as Go's multipart.Reader.ReadForm (which
// fasthttp and Fiber use) sorts them into Value and File.
type formField struct {
	value, file       []byte
	hasValue, hasFile bool
}

// text returns the field as FastAPI's Form reads it: the plain part, or
// else the file part's content.
func (f *formField) text() ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	if f.hasValue {
		return f.value, true
	}
	return f.file, f.hasFile
}

// blob returns the field as an uploaded file: the file part (a Blob, as
// Immich sends the image), or else, leniently, the plain part.
func (f *formField) blob() ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	if f.hasFile {
		return f.file, true
	}
	return f.value, f.hasValue
}

// form is a parsed multipart form, restricted to the fields asked for.
type form map[string]*formField

// formBoundary returns the boundary of a multipart/form-data content type.
func formBoundary(contentType string) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.EqualFold(mt, "multipart/form-data") || params["boundary"] == "" {
		return "", errNotForm
	}
	return params["boundary"], nil
}

// readForm parses a multipart form from r as it arrives, keeping only the
// fields named in caps, each up to its cap; other parts are read and
// dropped up to maxSkippedPartBytes each. Nothing is allocated from what
// the client declares: buffers grow with the bytes that really arrive.
// Errors are errNotForm, errFieldTooLarge (wrapped with the field's name),
// errTooManyParts, or r's own errors.
func readForm(r io.Reader, boundary string, caps map[string]int64) (form, error) {
	mr := multipart.NewReader(r, boundary)
	f := form{}
	for parts := 0; ; parts++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		if err != nil {
			return nil, formError(err)
		}
		if parts == maxParts {
			return nil, errTooManyParts
		}
		name := p.FormName()
		limit, wanted := caps[name]
		isFile := p.FileName() != ""
		fld := f[name]
		if wanted && fld == nil {
			fld = &formField{}
			f[name] = fld
		}
		keep := wanted && ((isFile && !fld.hasFile) || (!isFile && !fld.hasValue))
		if !keep || name == "" {
			if err := skipPart(p, name); err != nil {
				return nil, err
			}
			continue
		}
		b, err := readPart(p, limit)
		if err != nil {
			if errors.Is(err, errFieldTooLarge) {
				return nil, fmt.Errorf("%w: %s is larger than %d bytes", errFieldTooLarge, name, limit)
			}
			return nil, formError(err)
		}
		if isFile {
			fld.file, fld.hasFile = b, true
		} else {
			fld.value, fld.hasValue = b, true
		}
	}
}

// Blocks that parts are read into: sizes double from minBlock to
// maxBlock, one pool per size, so that the blocks of a request that ends
// (refused, cut off, or joined into one slice) serve the next ones
// instead of waiting for the garbage collector.
const (
	minBlockShift = 14 // 16 KiB
	maxBlockShift = 20 // 1 MiB
)

var blockPools [maxBlockShift - minBlockShift + 1]sync.Pool

func getBlock(shift int) []byte {
	if b, ok := blockPools[shift-minBlockShift].Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 1<<shift)
}

func putBlocks(blocks [][]byte) {
	for _, b := range blocks {
		b = b[:cap(b)]
		if shift := bits.Len(uint(len(b))) - 1; len(b) == 1<<shift && shift >= minBlockShift && shift <= maxBlockShift {
			blockPools[shift-minBlockShift].Put(&b)
		}
	}
}

// readPart reads a part of at most limit bytes, into blocks taken as the
// bytes arrive (nothing is reserved ahead of them), joined into one slice
// at the end.
func readPart(p *multipart.Part, limit int64) ([]byte, error) {
	var blocks [][]byte
	defer func() { putBlocks(blocks) }()
	var n int64
	shift := minBlockShift
	for {
		b := getBlock(shift)
		blocks = append(blocks, b)
		want := int(min(int64(len(b)), limit+1-n))
		k := 0
		var err error
		for k < want && err == nil {
			var m int
			m, err = p.Read(b[k:want])
			k += m
		}
		blocks[len(blocks)-1] = b[:k]
		n += int64(k)
		if n > limit {
			return nil, errFieldTooLarge
		}
		// io.EOF is the part's end; io.ErrUnexpectedEOF, a body cut
		// inside the part, is an error.
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		shift = min(shift+1, maxBlockShift)
	}
	out := make([]byte, 0, n)
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out, nil
}

func skipPart(p *multipart.Part, name string) error {
	n, err := io.Copy(io.Discard, io.LimitReader(p, maxSkippedPartBytes+1))
	if err != nil {
		return formError(err)
	}
	if n > maxSkippedPartBytes {
		return fmt.Errorf("%w: a part named %q that this route does not read is larger than %d bytes", errFieldTooLarge, name, maxSkippedPartBytes)
	}
	return nil
}

// formError keeps the body's own errors (size, budget, timeout, context)
// and calls any other a broken form.
func formError(err error) error {
	if errors.Is(err, errBodyTooLarge) || errors.Is(err, errBudget) || errors.Is(err, errReadTimeout) ||
		errors.Is(err, errFieldTooLarge) || isContextErr(err) {
		return err
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return errReadTimeout
	}
	return fmt.Errorf("%w: %w", errNotForm, err)
}

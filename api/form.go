package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
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

// readPart reads a part of at most limit bytes into a buffer that grows
// as bytes arrive.
func readPart(p *multipart.Part, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(p, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, errFieldTooLarge
	}
	return buf.Bytes(), nil
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

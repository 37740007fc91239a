package api

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
)

// formBody writes parts (name, file name, content; a file name "" makes
// a plain field) with boundary "B".
func formBody(parts ...[3]string) []byte {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.SetBoundary("B")
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p[1] != "" {
			h.Set("Content-Disposition", `form-data; name="`+p[0]+`"; filename="`+p[1]+`"`)
		} else {
			h.Set("Content-Disposition", `form-data; name="`+p[0]+`"`)
		}
		pw, _ := w.CreatePart(h)
		_, _ = io.WriteString(pw, p[2])
	}
	w.Close()
	return buf.Bytes()
}

var testCaps = map[string]int64{"entries": 64, "text": 64, "image": 4096}

// infinite is an endless body.
type infinite struct{ n int64 }

func (r *infinite) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	r.n += int64(len(p))
	return len(p), nil
}

// TestBodyReaderStopsAtTheLimit: an endless body is read up to one byte
// past the limit, then refused; every byte taken from the budget before it
// is read, and given back on release.
func TestBodyReaderStopsAtTheLimit(t *testing.T) {
	src := &infinite{}
	budget := &byteBudget{max: 1 << 20}
	first := "--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"blob\"\r\n\r\n"
	br := newBodyReader(t.Context(), io.MultiReader(strings.NewReader(first), src), nil, 0, 10000, budget)
	_, err := readForm(br, "B", map[string]int64{"image": 1 << 20})
	if !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("err = %v, want errBodyTooLarge", err)
	}
	if read := int64(len(first)) + src.n; read > 10001 {
		t.Fatalf("read %d bytes of an endless body with a limit of 10000", read)
	}
	if got := budget.used.Load(); got != 10001 {
		t.Fatalf("budget holds %d bytes, want the 10001 read", got)
	}
	br.release()
	if got := budget.used.Load(); got != 0 {
		t.Fatalf("budget holds %d after release", got)
	}
	// A budget smaller than the body refuses before reading past it.
	small := &byteBudget{max: 5000}
	br = newBodyReader(t.Context(), io.MultiReader(strings.NewReader(first), &infinite{}), nil, 0, 10000, small)
	if _, err := readForm(br, "B", map[string]int64{"image": 1 << 20}); !errors.Is(err, errBudget) {
		t.Fatalf("err = %v, want errBudget", err)
	}
	if small.used.Load() > 5000 {
		t.Fatalf("budget overdrawn: %d", small.used.Load())
	}
	br.release()
}

func TestReadForm(t *testing.T) {
	f, err := readForm(bytes.NewReader(formBody(
		[3]string{"entries", "", "{}"}, [3]string{"entries", "", "second"}, [3]string{"text", "t.txt", "from a file"},
		[3]string{"image", "", "plain"}, [3]string{"image", "blob", "file"}, [3]string{"other", "", "dropped"},
	)), "B", testCaps)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f["entries"].text(); string(v) != "{}" {
		t.Errorf("entries %q: the first plain part wins", v)
	}
	if v, _ := f["text"].text(); string(v) != "from a file" {
		t.Errorf("text %q: a file part is read as text", v)
	}
	if v, _ := f["image"].blob(); string(v) != "file" {
		t.Errorf("image %q: the file part wins", v)
	}
	if _, ok := f["other"]; ok {
		t.Error("a field no one asked for was kept")
	}
	for _, c := range []struct {
		name string
		body []byte
		want error
	}{
		{"field over its cap", formBody([3]string{"entries", "", strings.Repeat("x", 65)}), errFieldTooLarge},
		{"file field over its cap", formBody([3]string{"text", "a", strings.Repeat("x", 65)}), errFieldTooLarge},
		{"skipped part too large", formBody([3]string{"junk", "", strings.Repeat("x", maxSkippedPartBytes+1)}), errFieldTooLarge},
		{"broken part header", []byte("--B\r\nContent-Disposition: form-data; name=\"entries\"\r\nno colon here\r\n\r\n{}\r\n--B--"), errNotForm},
		{"cut in a part", formBody([3]string{"entries", "", "{}"})[:60], errNotForm},
	} {
		if _, err := readForm(bytes.NewReader(c.body), "B", testCaps); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// A body without the boundary, or cut inside the first part's header,
	// is an empty form for Go's reader too (then /predict answers 422).
	for _, body := range [][]byte{[]byte("entries={}"), formBody([3]string{"entries", "", "{}"})[:30]} {
		if f, err := readForm(bytes.NewReader(body), "B", testCaps); err != nil || len(f) != 0 {
			t.Errorf("%q: %v %v", body, f, err)
		}
	}
	var many [][3]string
	for range maxParts + 1 {
		many = append(many, [3]string{"x", "", "1"})
	}
	if _, err := readForm(bytes.NewReader(formBody(many...)), "B", testCaps); !errors.Is(err, errTooManyParts) {
		t.Errorf("too many parts: %v", err)
	}
	for _, ct := range []string{"multipart/form-data", "text/plain; boundary=B", "", "multipart/form-data; boundary="} {
		if _, err := formBoundary(ct); !errors.Is(err, errNotForm) {
			t.Errorf("content type %q: %v", ct, err)
		}
	}
	if b, err := formBoundary(`Multipart/Form-Data; boundary="a b"`); err != nil || b != "a b" {
		t.Errorf("boundary %q %v", b, err)
	}
}

// FuzzReadForm: the streaming form reader agrees with Go's
// multipart.Reader.ReadForm, which fasthttp and Fiber use: on any body
// that both accept, the same first plain value and first file of each
// field; a body that ReadForm accepts is refused only for a cap.
func FuzzReadForm(f *testing.F) {
	f.Add(formBody([3]string{"entries", "", `{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`}, [3]string{"image", "blob", "\xff\xd8\xff"}))
	f.Add(formBody([3]string{"image", "", "x"}, [3]string{"text", "a.txt", "hello"}, [3]string{"text", "", "hi"}))
	f.Add(formBody([3]string{"entries", "", strings.Repeat("{", 70)}))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"entries\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=7B=7D\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--B--"))
	f.Add([]byte("preamble\r\n--B\r\n\r\n\r\n--B--\r\nepilogue"))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := readForm(bytes.NewReader(body), "B", testCaps)
		want, werr := multipart.NewReader(bytes.NewReader(body), "B").ReadForm(32 << 20)
		if werr != nil {
			return
		}
		defer func() { _ = want.RemoveAll() }()
		if err != nil {
			if !errors.Is(err, errFieldTooLarge) && !errors.Is(err, errTooManyParts) {
				t.Fatalf("ReadForm accepts the body, readForm says %v", err)
			}
			return
		}
		for name := range testCaps {
			fld := got[name]
			vs, fs := want.Value[name], want.File[name]
			if (len(vs) > 0) != (fld != nil && fld.hasValue) || (len(fs) > 0) != (fld != nil && fld.hasFile) {
				t.Fatalf("%s: ReadForm has %d values and %d files, readForm %+v", name, len(vs), len(fs), fld)
			}
			if len(vs) > 0 && vs[0] != string(fld.value) {
				t.Fatalf("%s: value %q, ReadForm %q", name, fld.value, vs[0])
			}
			if len(fs) > 0 {
				r, err := fs[0].Open()
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(r)
				r.Close()
				if !bytes.Equal(b, fld.file) {
					t.Fatalf("%s: file %q, ReadForm %q", name, fld.file, b)
				}
			}
		}
	})
}

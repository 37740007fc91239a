package api

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"io/fs"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"gocv.io/x/gocv"
	"golang.org/x/sync/singleflight"

	"github.com/mlserve/mlserve/inference/imaging"
)

// Thumbnails (private):
//
//	GET /thumbs/{assetId}?size=N     the asset's image, fitted in N×N
//	GET /faces/{faceId}/crop?size=N  a square around the face, at most N×N
//
// They are made on demand from indexed files only: the file is found by
// the id (Files), never by a path from the request. The file is decoded
// with the service's bounded decoder (MLSERVE_MAX_IMAGE_PIXELS) and, like
// indexing, without EXIF orientation, so that face boxes and OCR boxes,
// which are in the indexed image's pixels, fall on the thumbnail where
// they were found. N is rounded up to 128, 256, 512 or 1024 (default
// 256); images are shrunk, never enlarged, and sent as JPEG.
//
// Work and memory are bounded: at most a few renders run at once (a
// queue of thumbWaitMax beyond them; more answer 503), a file larger than
// thumbMaxFile is refused, and the results are kept in an LRU cache of a
// fixed byte size, keyed like the ETag by the id, the size and the file's
// size and modification time (a changed file gets a new thumbnail).
// Concurrent requests for the same thumbnail share one render.

// thumbSizes are the sizes a thumbnail is made at.
var thumbSizes = []int{128, 256, 512, 1024}

const (
	defaultThumbSize = 256
	// DefaultThumbCacheBytes is the thumbnail cache's default size: some
	// 3,000 thumbnails of 256 pixels.
	DefaultThumbCacheBytes = 64 << 20
	// thumbMaxFile refuses larger files (a thumbnail holds its file in
	// memory while it decodes it).
	thumbMaxFile = 256 << 20
	// thumbWaitMax bounds the requests waiting for a render slot.
	thumbWaitMax = 64
	// thumbQuality is the JPEG quality of thumbnails.
	thumbQuality = 82
	// faceMargin is the side of a face crop relative to the face box's
	// longer side.
	faceMargin = 1.6
	// thumbVersion changes the ETags when the rendering changes.
	thumbVersion = "1"
)

var (
	errThumbBusy    = errors.New("too many thumbnails being made: retry shortly")
	errFileGone     = errors.New("the indexed file is no longer there (re-index the folder)")
	errFileTooLarge = errors.New("the indexed file is too large to make a thumbnail of")
)

func thumbURL(assetID int64) string { return "/thumbs/" + strconv.FormatInt(assetID, 10) }
func faceURL(faceID int64) string   { return "/faces/" + strconv.FormatInt(faceID, 10) + "/crop" }

// thumbnails renders and caches thumbnails.
type thumbnails struct {
	decode  imaging.DecodeOptions
	cache   *byteLRU
	slots   chan struct{}
	waiting atomic.Int64
	group   singleflight.Group
	renders atomic.Int64
}

func newThumbnails(decode imaging.DecodeOptions, cacheBytes int64) *thumbnails {
	if cacheBytes == 0 {
		cacheBytes = DefaultThumbCacheBytes
	}
	n := min(max(runtime.GOMAXPROCS(0)/2, 1), 4)
	return &thumbnails{decode: decode, cache: newByteLRU(max(cacheBytes, 0)), slots: make(chan struct{}, n)}
}

// thumbSize reads the size parameter, rounded up to a thumbnail size.
func thumbSize(c *fiber.Ctx) (int, error) {
	raw := c.Query("size")
	if raw == "" {
		return defaultThumbSize, nil
	}
	n, err := strconv.Atoi(raw)
	if err == nil && n >= 1 {
		for _, s := range thumbSizes {
			if n <= s {
				return s, nil
			}
		}
	}
	return 0, fiber.NewError(fiber.StatusBadRequest, "size must be an integer from 1 to "+strconv.Itoa(thumbSizes[len(thumbSizes)-1]))
}

// thumbJob is one thumbnail to serve: a whole image, or a face crop.
type thumbJob struct {
	key  string // kind, id and size
	path string
	size int
	face *Face
}

// assetThumb is GET /thumbs/{assetId}.
func (s *Server) assetThumb(c *fiber.Ctx) error {
	if s.opts.Files == nil {
		return errNoLibrary
	}
	id, err := pathID(c, "id", "asset")
	if err != nil {
		return err
	}
	size, err := thumbSize(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	path, err := s.opts.Files.AssetFile(ctx, id)
	if err != nil {
		return s.libraryError(c, err)
	}
	return s.sendThumb(ctx, c, thumbJob{key: fmt.Sprintf("asset/%d/%d", id, size), path: path, size: size})
}

// faceCrop is GET /faces/{faceId}/crop.
func (s *Server) faceCrop(c *fiber.Ctx) error {
	if s.opts.Files == nil {
		return errNoLibrary
	}
	id, err := pathID(c, "id", "face")
	if err != nil {
		return err
	}
	size, err := thumbSize(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	path, face, err := s.opts.Files.FaceFile(ctx, id)
	if err != nil {
		return s.libraryError(c, err)
	}
	key := fmt.Sprintf("face/%d/%d/%dx%d/%g", id, size, face.ImageWidth, face.ImageHeight, face.Box)
	return s.sendThumb(ctx, c, thumbJob{key: key, path: path, size: size, face: &face})
}

// sendThumb answers with the thumbnail of job: 304 when the client's copy
// is current, else from the cache or rendered.
func (s *Server) sendThumb(ctx context.Context, c *fiber.Ctx, job thumbJob) error {
	fi, err := os.Stat(job.path)
	if err != nil || !fi.Mode().IsRegular() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return c.Status(fiber.StatusNotFound).JSON(detail{errFileGone.Error()})
		}
		s.logger.Warn("thumbnail: cannot read an indexed file", "err", err)
		return c.Status(fiber.StatusInternalServerError).JSON(detail{"cannot read the indexed file"})
	}
	if fi.Size() > thumbMaxFile {
		return c.Status(fiber.StatusUnprocessableEntity).JSON(detail{errFileTooLarge.Error()})
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", thumbVersion, job.key, fi.Size(), fi.ModTime().UnixNano()))
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	c.Set(fiber.HeaderETag, etag)
	c.Set(fiber.HeaderCacheControl, "private, max-age=3600")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	if etagMatch(c.Get(fiber.HeaderIfNoneMatch), etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	data, ok := s.thumbs.cache.get(etag)
	if !ok {
		v, err, _ := s.thumbs.group.Do(etag, func() (any, error) {
			b, err := s.thumbs.render(ctx, job)
			if err == nil {
				s.thumbs.cache.add(etag, b)
			}
			return b, err
		})
		if err != nil {
			c.Set(fiber.HeaderCacheControl, "no-store")
			c.Response().Header.Del(fiber.HeaderETag)
			return s.thumbError(c, err)
		}
		data = v.([]byte)
	}
	c.Set(fiber.HeaderContentType, "image/jpeg")
	return c.Send(data)
}

func (s *Server) thumbError(c *fiber.Ctx, err error) error {
	switch {
	case errors.Is(err, errThumbBusy):
		c.Set(fiber.HeaderRetryAfter, retryAfter)
		return c.Status(fiber.StatusServiceUnavailable).JSON(detail{err.Error()})
	case errors.Is(err, errFileGone):
		return c.Status(fiber.StatusNotFound).JSON(detail{err.Error()})
	case errors.Is(err, errFileTooLarge):
		return c.Status(fiber.StatusUnprocessableEntity).JSON(detail{err.Error()})
	case errors.Is(err, imaging.ErrTooLarge):
		return c.Status(fiber.StatusUnprocessableEntity).JSON(detail{"the indexed image is over the decoding limits (MLSERVE_MAX_IMAGE_PIXELS)"})
	case errors.Is(err, imaging.ErrDecode), errors.Is(err, imaging.ErrEmpty):
		return c.Status(fiber.StatusUnprocessableEntity).JSON(detail{"the indexed file cannot be decoded now: " + err.Error()})
	case isContextErr(err):
		return s.predictError(c, err)
	}
	s.logger.Error("thumbnail failed", "err", err)
	return c.Status(fiber.StatusInternalServerError).JSON(detail{"Internal Server Error"})
}

// etagMatch tells whether an If-None-Match header names etag.
func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// render reads, decodes and shrinks job's file, in one of the render
// slots.
func (t *thumbnails) render(ctx context.Context, job thumbJob) ([]byte, error) {
	if t.waiting.Add(1) > thumbWaitMax {
		t.waiting.Add(-1)
		return nil, errThumbBusy
	}
	select {
	case t.slots <- struct{}{}:
		t.waiting.Add(-1)
	case <-ctx.Done():
		t.waiting.Add(-1)
		return nil, ctx.Err()
	}
	defer func() { <-t.slots }()
	t.renders.Add(1)
	im, err := decodeFile(job.path, t.decode)
	if err != nil {
		return nil, err
	}
	r := im.Bounds()
	if job.face != nil {
		r = faceRect(*job.face, im.W, im.H)
	}
	return encodeThumb(im, r, job.size)
}

// decodeFile reads and decodes path (its bytes are garbage once it
// returns).
func decodeFile(path string, o imaging.DecodeOptions) (*imaging.Image, error) {
	data, err := readFile(path, thumbMaxFile)
	if err != nil {
		return nil, err
	}
	return imaging.DecodeWith(data, o)
}

// readFile reads at most limit bytes of path.
func readFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errFileGone
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errFileTooLarge
	}
	return data, nil
}

// faceRect is the square crop around face in an image decoded at w×h:
// faceMargin times the box's longer side, centred on the box, moved
// inside the image (and no larger than it).
func faceRect(face Face, w, h int) image.Rectangle {
	sx, sy := 1.0, 1.0
	if face.ImageWidth > 0 && face.ImageHeight > 0 {
		sx, sy = float64(w)/float64(face.ImageWidth), float64(h)/float64(face.ImageHeight)
	}
	x1, y1 := float64(face.Box[0])*sx, float64(face.Box[1])*sy
	x2, y2 := float64(face.Box[2])*sx, float64(face.Box[3])*sy
	if s := x1 + y1 + x2 + y2; math.IsNaN(s) || math.IsInf(s, 0) {
		x1, y1, x2, y2 = 0, 0, float64(w), float64(h)
	}
	side := faceMargin * max(x2-x1, y2-y1)
	if side < 1 {
		side = 1
	}
	side = min(side, float64(min(w, h)))
	n := max(int(side), 1)
	cx, cy := (x1+x2)/2, (y1+y2)/2
	x0 := clampInt(int(math.Round(cx-side/2)), 0, w-n)
	y0 := clampInt(int(math.Round(cy-side/2)), 0, h-n)
	return image.Rect(x0, y0, x0+n, y0+n)
}

func clampInt(v, lo, hi int) int { return max(lo, min(v, hi)) }

// encodeThumb shrinks the part r of im to fit in size×size (never
// enlarging it) and encodes it as JPEG.
func encodeThumb(im *imaging.Image, r image.Rectangle, size int) ([]byte, error) {
	rgb, err := im.Mat()
	if err != nil {
		return nil, err
	}
	defer rgb.Close()
	src := rgb.Region(r)
	defer src.Close()
	w, h := r.Dx(), r.Dy()
	if s := float64(size) / float64(max(w, h)); s < 1 {
		w, h = max(int(math.Round(float64(w)*s)), 1), max(int(math.Round(float64(h)*s)), 1)
	}
	small := gocv.NewMat()
	defer small.Close()
	if w == r.Dx() && h == r.Dy() {
		src.CopyTo(&small)
	} else {
		gocv.Resize(src, &small, image.Pt(w, h), 0, 0, gocv.InterpolationArea)
	}
	pix, err := small.DataPtrUint8() // RGB, continuous
	if err != nil {
		return nil, fmt.Errorf("thumbnail: %w", err)
	}
	// The standard library's encoder: the binary does not link OpenCV's
	// imgcodecs (thumbnails are small; its speed does not matter here).
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	for i, j := 0, 0; i+3 <= len(pix) && j+4 <= len(rgba.Pix); i, j = i+3, j+4 {
		rgba.Pix[j], rgba.Pix[j+1], rgba.Pix[j+2], rgba.Pix[j+3] = pix[i], pix[i+1], pix[i+2], 0xff
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, rgba, &jpeg.Options{Quality: thumbQuality}); err != nil {
		return nil, fmt.Errorf("thumbnail: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// byteLRU is a least-recently-used cache of byte slices bounded by their
// total size.
type byteLRU struct {
	mu        sync.Mutex
	max, used int64
	ll        *list.List
	m         map[string]*list.Element
	hits      int64
	misses    int64
}

type lruEntry struct {
	key string
	val []byte
}

func newByteLRU(maxBytes int64) *byteLRU {
	return &byteLRU{max: maxBytes, ll: list.New(), m: map[string]*list.Element{}}
}

func (c *byteLRU) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		c.misses++
		return nil, false
	}
	c.hits++
	c.ll.MoveToFront(e)
	return e.Value.(*lruEntry).val, true
}

// add keeps val under key, dropping the least recently used entries to
// stay within the cap; a value larger than an eighth of the cap is not
// kept.
func (c *byteLRU) add(key string, val []byte) {
	n := int64(len(val) + len(key))
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.max/8 {
		return
	}
	if e, ok := c.m[key]; ok {
		old := e.Value.(*lruEntry)
		c.used += n - int64(len(old.val)+len(old.key))
		old.val = val
		c.ll.MoveToFront(e)
	} else {
		c.m[key] = c.ll.PushFront(&lruEntry{key: key, val: val})
		c.used += n
	}
	for c.used > c.max {
		e := c.ll.Back()
		old := e.Value.(*lruEntry)
		c.ll.Remove(e)
		delete(c.m, old.key)
		c.used -= int64(len(old.val) + len(old.key))
	}
}

// thumbCacheStats is the cache's state for the status panel.
type thumbCacheStats struct {
	Entries  int   `json:"entries"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"maxBytes"`
	Hits     int64 `json:"hits"`
	Misses   int64 `json:"misses"`
}

func (c *byteLRU) stats() thumbCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return thumbCacheStats{Entries: c.ll.Len(), Bytes: c.used, MaxBytes: c.max, Hits: c.hits, Misses: c.misses}
}

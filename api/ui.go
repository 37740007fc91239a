package api

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// The web page: plain HTML, CSS and JavaScript embedded in the binary
// (api/web), served at /ui/ when search is configured. It is one page
// that reads the private routes (/search, /people, /thumbs, /faces,
// /status) with fetch.
//
// Access: the page's own files hold no library data. Without an API key
// they follow the private routes' rule (loopback, or
// MLSERVE_SEARCH_PUBLIC). With MLSERVE_API_KEY set they are served to
// anyone, because a browser cannot send a Bearer token when it opens a
// page; the page then asks for the key, keeps it in the tab's
// sessionStorage and sends it with every request it makes, thumbnails
// included (fetched as blobs). Every call that reads the library still
// needs the key.

//go:embed web
var webFiles embed.FS

// webFile is one embedded file, ready to send.
type webFile struct {
	data  []byte
	ctype string
	etag  string
}

// contentSecurityPolicy keeps the page to its own origin: scripts and
// styles from /ui/ only, images from the server or blob: URLs (keyed
// thumbnails), no frames.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func loadWeb() map[string]webFile {
	out := map[string]webFile{}
	err := fs.WalkDir(webFiles, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := webFiles.ReadFile(p)
		if err != nil {
			return err
		}
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(data)
		out[strings.TrimPrefix(p, "web/")] = webFile{data: data, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("api: embedded web files: " + err.Error()) // the build embeds them
	}
	return out
}

func (s *Server) mountUI() {
	s.web = loadWeb()
	s.app.Get("/ui", s.shell, s.uiFile)
	s.app.Get("/ui/:file", s.shell, s.uiFile)
}

// shell is the page's access control (see above).
func (s *Server) shell(c *fiber.Ctx) error {
	if s.keyHash != nil {
		return c.Next()
	}
	return s.private(c)
}

func (s *Server) uiFile(c *fiber.Ctx) error {
	name := c.Params("file")
	if name == "" {
		if !strings.HasSuffix(c.Path(), "/") {
			return c.Redirect("/ui/", fiber.StatusMovedPermanently)
		}
		name = "index.html"
	}
	f, ok := s.web[name]
	if !ok {
		return fiber.ErrNotFound
	}
	h := func(k, v string) { c.Set(k, v) }
	h(fiber.HeaderContentType, f.ctype)
	h(fiber.HeaderETag, f.etag)
	// Revalidated every time, so that a new binary's page shows at once.
	h(fiber.HeaderCacheControl, "no-cache")
	h(fiber.HeaderXContentTypeOptions, "nosniff")
	h(fiber.HeaderContentSecurityPolicy, contentSecurityPolicy)
	h(fiber.HeaderReferrerPolicy, "no-referrer")
	h(fiber.HeaderXFrameOptions, "DENY")
	if etagMatch(c.Get(fiber.HeaderIfNoneMatch), f.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	return c.Send(f.data)
}

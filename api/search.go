package api

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Searcher answers smart-search queries: nearest indexed images by cosine
// distance to a text's or an example image's CLIP embedding.
type Searcher interface {
	SearchText(ctx context.Context, query string, limit int) ([]SearchHit, error)
	SearchImage(ctx context.Context, image []byte, limit int) ([]SearchHit, error)
}

// SearchHit is one result: an asset of our index (path) or of Immich's
// database (asset id), and its cosine distance.
type SearchHit struct {
	AssetID  string  `json:"assetId,omitempty"`
	Path     string  `json:"path,omitempty"`
	Distance float64 `json:"distance"`
}

// MaxSearchLimit caps results per query, as Immich caps a page at 1000.
const MaxSearchLimit = 1000

type searchResponse struct {
	Results []SearchHit `json:"results"`
}

func searchLimit(raw string) (int, error) {
	if raw == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > MaxSearchLimit {
		return 0, fiber.NewError(fiber.StatusBadRequest, "limit must be an integer from 1 to "+strconv.Itoa(MaxSearchLimit))
	}
	return n, nil
}

// searchText is GET /search?q=…&limit=N.
func (s *Server) searchText(c *fiber.Ctx) error {
	if s.opts.Searcher == nil {
		return errNoSearch
	}
	q := strings.TrimSpace(c.Query("q"))
	if q == "" {
		return fiber.NewError(fiber.StatusBadRequest, "query parameter q is required")
	}
	limit, err := searchLimit(c.Query("limit"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	hits, err := s.opts.Searcher.SearchText(ctx, q, limit)
	if err != nil {
		return s.predictError(c, err)
	}
	return c.JSON(searchResponse{Results: nonNil(hits)})
}

// searchImage is POST /search with a multipart "image" (and an optional
// "limit" field or query parameter): search by example.
func (s *Server) searchImage(c *fiber.Ctx) error {
	if s.opts.Searcher == nil {
		return errNoSearch
	}
	form, err := c.MultipartForm()
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "send the example image as multipart/form-data field \"image\"")
	}
	defer form.RemoveAll()
	img, ok, err := formImage(form)
	if err != nil {
		return err
	}
	if !ok || len(img) == 0 {
		return fiber.NewError(fiber.StatusBadRequest, "field image is required")
	}
	rawLimit := c.Query("limit")
	if v, ok := formValue(form, "limit"); ok {
		rawLimit = v
	}
	limit, err := searchLimit(rawLimit)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	hits, err := s.opts.Searcher.SearchImage(ctx, img, limit)
	if err != nil {
		return s.predictError(c, err)
	}
	return c.JSON(searchResponse{Results: nonNil(hits)})
}

var errNoSearch = fiber.NewError(fiber.StatusServiceUnavailable, "search is not configured: start mlserve with MLSERVE_DATABASE_URL")

func nonNil(h []SearchHit) []SearchHit {
	if h == nil {
		return []SearchHit{}
	}
	return h
}

// ErrSearchUnavailable may be returned by a Searcher whose database is
// unreachable; it answers 503.
var ErrSearchUnavailable = errors.New("search database unavailable")

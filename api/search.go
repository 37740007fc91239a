package api

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// Searcher answers smart-search queries: nearest indexed images by cosine
// distance to a text's or an example image's CLIP embedding.
type Searcher interface {
	SearchText(ctx context.Context, text string, q SearchQuery) ([]SearchHit, error)
	SearchImage(ctx context.Context, image []byte, q SearchQuery) ([]SearchHit, error)
}

// SearchQuery is what a search asks besides its text or image.
type SearchQuery struct {
	// Limit is the number of results, 1 to MaxSearchLimit.
	Limit int
	// OwnerID restricts the results to one Immich user's assets. A
	// Searcher over Immich's database refuses an empty one with
	// ErrOwnerRequired.
	OwnerID string
	// PersonID restricts a text search to the assets in which this person
	// appears (0: all); a Searcher without people answers ErrUnsupported.
	PersonID int64
}

// SearchHit is one result: an asset of our index (id and path) or of
// Immich's database (asset id, original path), and its cosine distance.
type SearchHit struct {
	AssetID string
	// Path is the file's absolute path; only callers with the API key see
	// it.
	Path string
	// RelPath is the path relative to the library's root, shown to
	// callers without a key; empty hides the path from them.
	RelPath  string
	Distance float64
	// Thumbnail tells that the asset has a thumbnail at /thumbs/{AssetID}
	// (an asset of our own index).
	Thumbnail bool
}

// searchResult is a hit on the wire.
type searchResult struct {
	AssetID  string  `json:"assetId,omitempty"`
	Path     string  `json:"path,omitempty"`
	Distance float64 `json:"distance"`
	// Thumbnail is the URL of the asset's thumbnail, relative to the
	// server.
	Thumbnail string `json:"thumbnail,omitempty"`
}

// MaxSearchLimit caps results per query, as Immich caps a page at 1000.
const MaxSearchLimit = 1000

type searchResponse struct {
	Results []searchResult `json:"results"`
}

// ErrSearchUnavailable may be returned by a Searcher whose database is
// unreachable; it answers 503.
var ErrSearchUnavailable = errors.New("search database unavailable")

// ErrOwnerRequired: the search runs over Immich's library, which belongs to
// several users; the caller must say whose assets to search.
var ErrOwnerRequired = errors.New("ownerId is required: this instance searches Immich's library (MLSERVE_SEARCH_IMMICH), whose assets belong to several users")

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func searchQuery(rawLimit, owner string) (SearchQuery, error) {
	q := SearchQuery{Limit: 100, OwnerID: strings.TrimSpace(owner)}
	if rawLimit != "" {
		n, err := strconv.Atoi(rawLimit)
		if err != nil || n < 1 || n > MaxSearchLimit {
			return q, fiber.NewError(fiber.StatusBadRequest, "limit must be an integer from 1 to "+strconv.Itoa(MaxSearchLimit))
		}
		q.Limit = n
	}
	if q.OwnerID != "" && !uuidRE.MatchString(q.OwnerID) {
		return q, fiber.NewError(fiber.StatusBadRequest, "ownerId must be an Immich user id (a UUID)")
	}
	return q, nil
}

// searchText is GET /search?q=…&limit=N[&ownerId=…][&person=ID]: the
// indexed images nearest to a text, all of them or those in which one
// person appears; or, with ocr=… instead of q, the images whose
// recognised text matches (searchOCR).
func (s *Server) searchText(c *fiber.Ctx) error {
	if _, ok := c.Queries()["ocr"]; ok {
		return s.searchOCR(c)
	}
	if s.opts.Searcher == nil {
		return errNoSearch
	}
	text := strings.TrimSpace(c.Query("q"))
	if text == "" {
		return fiber.NewError(fiber.StatusBadRequest, "query parameter q (or ocr, for text in images) is required")
	}
	if len(text) > maxTextBytes {
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, "q is larger than "+strconv.Itoa(maxTextBytes)+" bytes")
	}
	q, err := searchQuery(c.Query("limit"), c.Query("ownerId"))
	if err != nil {
		return err
	}
	if raw := c.Query("person"); raw != "" {
		id, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || id <= 0 {
			return fiber.NewError(fiber.StatusBadRequest, "person must be a person id (a positive integer)")
		}
		q.PersonID = id
	}
	if ok, err := s.admit(c); !ok {
		return err
	}
	defer s.adm.Release()
	r := s.newRequest(c)
	defer r.end()
	stop := r.watch()
	hits, err := s.opts.Searcher.SearchText(r.ctx, text, q)
	stop()
	if err != nil {
		return s.libraryError(c, err)
	}
	return c.JSON(searchResponse{Results: s.results(c, hits)})
}

// searchImage is POST /search with a multipart "image" (and an optional
// "limit" field or query parameter, and "ownerId"): search by example.
func (s *Server) searchImage(c *fiber.Ctx) error {
	if s.opts.Searcher == nil {
		return errNoSearch
	}
	if ok, err := s.admit(c); !ok {
		return err
	}
	defer s.adm.Release()
	r := s.newRequest(c)
	defer r.end()
	f, err := r.readForm(map[string]int64{"image": s.opts.MaxBodyBytes, "limit": maxSmallFieldBytes, "ownerId": maxSmallFieldBytes})
	if err != nil {
		if errors.Is(err, errNotForm) {
			return fiber.NewError(fiber.StatusBadRequest, "send the example image as multipart/form-data field \"image\"")
		}
		return s.formError(c, err)
	}
	img, ok := f["image"].blob()
	if !ok || len(img) == 0 {
		return fiber.NewError(fiber.StatusBadRequest, "field image is required")
	}
	rawLimit, owner := c.Query("limit"), c.Query("ownerId")
	if v, ok := f["limit"].text(); ok {
		rawLimit = string(v)
	}
	if v, ok := f["ownerId"].text(); ok {
		owner = string(v)
	}
	q, err := searchQuery(rawLimit, owner)
	if err != nil {
		return err
	}
	stop := r.watch()
	hits, err := s.opts.Searcher.SearchImage(r.ctx, img, q)
	stop()
	if err != nil {
		return s.libraryError(c, err)
	}
	return c.JSON(searchResponse{Results: s.results(c, hits)})
}

// results puts hits on the wire: absolute paths for callers with the API
// key, paths relative to the library's root for the others.
func (s *Server) results(c *fiber.Ctx, hits []SearchHit) []searchResult {
	full := authenticated(c)
	out := make([]searchResult, len(hits))
	for i, h := range hits {
		out[i] = searchResult{AssetID: h.AssetID, Path: h.RelPath, Distance: h.Distance}
		if full {
			out[i].Path = h.Path
		}
		if h.Thumbnail && s.opts.Files != nil {
			out[i].Thumbnail = "/thumbs/" + h.AssetID
		}
	}
	return out
}

// ocrResult is a hit of a search over text in images.
type ocrResult struct {
	AssetID   int64     `json:"assetId"`
	Path      string    `json:"path,omitempty"`
	Score     float64   `json:"score"`
	Thumbnail string    `json:"thumbnail,omitempty"`
	Lines     []ocrLine `json:"lines"`
}

type ocrLine struct {
	Index int        `json:"index"`
	Text  string     `json:"text"`
	Box   [8]float32 `json:"box"`
	Score float64    `json:"score"`
}

// maxOCRQuery caps an OCR query, in bytes.
const maxOCRQuery = 256

// searchOCR is GET /search?ocr=…&limit=N: the images whose recognised
// text contains the query (case and accents ignored) or, fuzzily, is
// similar to it, best first, each with the matching lines: their text,
// score and box (corners normalised to 0..1 of the image).
func (s *Server) searchOCR(c *fiber.Ctx) error {
	if s.opts.TextSearcher == nil {
		return errNoLibrary
	}
	if c.Query("q") != "" || c.Query("person") != "" {
		return fiber.NewError(fiber.StatusBadRequest, "give either q (with person) or ocr, not both")
	}
	text := strings.TrimSpace(c.Query("ocr"))
	if text == "" {
		return fiber.NewError(fiber.StatusBadRequest, "query parameter ocr is empty")
	}
	if len(text) > maxOCRQuery || !utf8.ValidString(text) || strings.ContainsRune(text, 0) {
		return fiber.NewError(fiber.StatusBadRequest, "ocr must be valid UTF-8 of at most "+strconv.Itoa(maxOCRQuery)+" bytes")
	}
	q, err := searchQuery(c.Query("limit"), c.Query("ownerId"))
	if err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	hits, err := s.opts.TextSearcher.SearchOCR(ctx, text, q)
	if err != nil {
		return s.libraryError(c, err)
	}
	full := authenticated(c)
	out := make([]ocrResult, len(hits))
	for i, h := range hits {
		out[i] = ocrResult{AssetID: h.AssetID, Path: h.RelPath, Score: h.Score, Lines: make([]ocrLine, len(h.Lines))}
		if full {
			out[i].Path = h.Path
		}
		if s.opts.Files != nil {
			out[i].Thumbnail = thumbURL(h.AssetID)
		}
		for j, l := range h.Lines {
			out[i].Lines[j] = ocrLine(l)
		}
	}
	return c.JSON(fiber.Map{"results": out})
}

var errNoSearch = fiber.NewError(fiber.StatusServiceUnavailable, "search is not configured: start mlserve with MLSERVE_DATABASE_URL")

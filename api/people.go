package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
)

// People routes (private):
//
//	GET          /people?limit=&offset=&minFaces=  people, named first, then by face count
//	GET          /people/{id}                      one person
//	PUT|PATCH    /people/{id}        {"name": …}   rename ("" clears the name)
//	POST         /people/{id}/merge  {"ids": […]}  move those people's faces into id
//	GET          /people/{id}/assets?limit=&offset= the photos a person appears in
//
// Every person carries the URL of its cover face's crop, every asset the
// URL of its thumbnail (thumb.go).

// maxJSONBody caps the JSON body of the people routes.
const maxJSONBody = 16 << 10

// Default and largest page sizes of the library routes.
const (
	defaultPage = 100
	maxPage     = 1000
	// maxOffset bounds paging offsets (deep offsets cost the database a
	// scan of everything before them).
	maxOffset = 1_000_000
	// defaultMinFaces is Immich's clustering default: unnamed people with
	// fewer faces are hidden, as Immich hides them.
	defaultMinFaces = 3
)

type personJSON struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	FaceCount   int    `json:"faceCount"`
	AssetCount  int    `json:"assetCount"`
	CoverFaceID int64  `json:"coverFaceId,omitempty"`
	// Thumbnail is the URL of the cover face's crop.
	Thumbnail string `json:"thumbnail,omitempty"`
}

type faceJSON struct {
	ID          int64      `json:"id"`
	ImageWidth  int        `json:"imageWidth"`
	ImageHeight int        `json:"imageHeight"`
	Box         [4]float32 `json:"box"`
	Thumbnail   string     `json:"thumbnail"`
}

type personAssetJSON struct {
	AssetID    int64      `json:"assetId"`
	Path       string     `json:"path,omitempty"`
	ModifiedAt *time.Time `json:"modifiedAt,omitempty"`
	Face       faceJSON   `json:"face"`
	Thumbnail  string     `json:"thumbnail"`
}

func (s *Server) personJSON(p Person) personJSON {
	out := personJSON{ID: p.ID, Name: p.Name, FaceCount: p.FaceCount, AssetCount: p.AssetCount, CoverFaceID: p.CoverFaceID}
	if p.CoverFaceID != 0 {
		out.Thumbnail = faceURL(p.CoverFaceID)
	}
	return out
}

// libraryCtx is the context of a library request: the worker timeout, and
// the server's shutdown.
func (s *Server) libraryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.opts.RequestTimeout)
}

// libraryError answers an error of the library interfaces.
func (s *Server) libraryError(c *fiber.Ctx, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return c.Status(fiber.StatusNotFound).JSON(detail{err.Error()})
	case errors.Is(err, ErrInvalid):
		return c.Status(fiber.StatusUnprocessableEntity).JSON(detail{err.Error()})
	case errors.Is(err, ErrUnsupported):
		return c.Status(fiber.StatusNotImplemented).JSON(detail{err.Error()})
	}
	return s.predictError(c, err)
}

var errNoLibrary = fiber.NewError(fiber.StatusServiceUnavailable, "the library is not configured: start mlserve with MLSERVE_DATABASE_URL")

// pathID reads a positive integer id from the route.
func pathID(c *fiber.Ctx, name, what string) (int64, error) {
	id, err := strconv.ParseInt(c.Params(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, fiber.NewError(fiber.StatusBadRequest, what+" id must be a positive integer")
	}
	return id, nil
}

// queryInt reads an optional integer query parameter in lo..hi.
func queryInt(c *fiber.Ctx, name string, def, lo, hi int) (int, error) {
	raw := c.Query(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, fiber.NewError(fiber.StatusBadRequest, name+" must be an integer from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi))
	}
	return n, nil
}

func (s *Server) listPeople(c *fiber.Ctx) error {
	if s.opts.People == nil {
		return errNoLibrary
	}
	var q PeopleQuery
	var err error
	if q.Limit, err = queryInt(c, "limit", defaultPage, 1, maxPage); err != nil {
		return err
	}
	if q.Offset, err = queryInt(c, "offset", 0, 0, maxOffset); err != nil {
		return err
	}
	if q.MinFaces, err = queryInt(c, "minFaces", defaultMinFaces, 0, 1000); err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	people, err := s.opts.People.ListPeople(ctx, q)
	if err != nil {
		return s.libraryError(c, err)
	}
	out := make([]personJSON, len(people))
	for i, p := range people {
		out[i] = s.personJSON(p)
	}
	return c.JSON(fiber.Map{"people": out})
}

func (s *Server) getPerson(c *fiber.Ctx) error {
	if s.opts.People == nil {
		return errNoLibrary
	}
	id, err := pathID(c, "id", "person")
	if err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	p, err := s.opts.People.Person(ctx, id)
	if err != nil {
		return s.libraryError(c, err)
	}
	return c.JSON(s.personJSON(p))
}

// renamePerson is PUT or PATCH /people/{id} with {"name": "…"}.
func (s *Server) renamePerson(c *fiber.Ctx) error {
	if s.opts.People == nil {
		return errNoLibrary
	}
	id, err := pathID(c, "id", "person")
	if err != nil {
		return err
	}
	var body struct {
		Name *string `json:"name"`
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	if err := s.readJSON(ctx, c, &body); err != nil {
		return err
	}
	if body.Name == nil {
		return fiber.NewError(fiber.StatusUnprocessableEntity, `the body must be {"name": "…"} ("" clears the name)`)
	}
	p, err := s.opts.People.RenamePerson(ctx, id, *body.Name)
	if err != nil {
		return s.libraryError(c, err)
	}
	return c.JSON(s.personJSON(p))
}

// mergePeople is POST /people/{id}/merge with {"ids": [2, 3]}: the faces
// of people 2 and 3 move to id, and 2 and 3 are deleted.
func (s *Server) mergePeople(c *fiber.Ctx) error {
	if s.opts.People == nil {
		return errNoLibrary
	}
	into, err := pathID(c, "id", "person")
	if err != nil {
		return err
	}
	var body struct {
		IDs []int64 `json:"ids"`
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	if err := s.readJSON(ctx, c, &body); err != nil {
		return err
	}
	if len(body.IDs) == 0 || len(body.IDs) > maxPage {
		return fiber.NewError(fiber.StatusUnprocessableEntity, `the body must be {"ids": [...]}: 1 to `+strconv.Itoa(maxPage)+" people to merge into "+strconv.FormatInt(into, 10))
	}
	seen := make(map[int64]bool, len(body.IDs))
	from := make([]int64, 0, len(body.IDs))
	for _, id := range body.IDs {
		if id <= 0 {
			return fiber.NewError(fiber.StatusUnprocessableEntity, "person ids must be positive integers")
		}
		if id == into {
			return fiber.NewError(fiber.StatusUnprocessableEntity, "cannot merge person "+strconv.FormatInt(into, 10)+" into itself")
		}
		if !seen[id] {
			seen[id] = true
			from = append(from, id)
		}
	}
	p, err := s.opts.People.MergePeople(ctx, into, from)
	if err != nil {
		return s.libraryError(c, err)
	}
	return c.JSON(s.personJSON(p))
}

func (s *Server) personAssets(c *fiber.Ctx) error {
	if s.opts.People == nil {
		return errNoLibrary
	}
	id, err := pathID(c, "id", "person")
	if err != nil {
		return err
	}
	limit, err := queryInt(c, "limit", defaultPage, 1, maxPage)
	if err != nil {
		return err
	}
	offset, err := queryInt(c, "offset", 0, 0, maxOffset)
	if err != nil {
		return err
	}
	ctx, cancel := s.libraryCtx()
	defer cancel()
	assets, err := s.opts.People.PersonAssets(ctx, id, limit, offset)
	if err != nil {
		return s.libraryError(c, err)
	}
	full := authenticated(c)
	out := make([]personAssetJSON, len(assets))
	for i, a := range assets {
		out[i] = personAssetJSON{
			AssetID: a.AssetID, Path: a.RelPath,
			Face: faceJSON{ID: a.Face.ID, ImageWidth: a.Face.ImageWidth, ImageHeight: a.Face.ImageHeight,
				Box: a.Face.Box, Thumbnail: faceURL(a.Face.ID)},
			Thumbnail: thumbURL(a.AssetID),
		}
		if full {
			out[i].Path = a.Path
		}
		if !a.ModifiedAt.IsZero() {
			t := a.ModifiedAt
			out[i].ModifiedAt = &t
		}
	}
	return c.JSON(fiber.Map{"assets": out})
}

// readJSON reads a small JSON body (at most maxJSONBody bytes, charged to
// the in-flight byte budget) into v: unknown fields and trailing data are
// refused with 422, a body that is not JSON with 415.
func (s *Server) readJSON(ctx context.Context, c *fiber.Ctx, v any) error {
	mt, _, err := mime.ParseMediaType(string(c.Request().Header.ContentType()))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return fiber.NewError(fiber.StatusUnsupportedMediaType, "send the body as application/json")
	}
	var nc net.Conn
	if lc, ok := c.Context().Conn().(*conn); ok {
		nc = lc
	}
	body := newBodyReader(ctx, c.Context().RequestBodyStream(), nc, s.opts.ReadTimeout, maxJSONBody, s.budget)
	data, err := io.ReadAll(body)
	if body.done() {
		c.Locals(localBodyRead, true)
	}
	body.release()
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			return fiber.NewError(fiber.StatusRequestEntityTooLarge, "the body is larger than "+strconv.Itoa(maxJSONBody)+" bytes")
		}
		return s.formError(c, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fiber.NewError(fiber.StatusUnprocessableEntity, "invalid JSON body: "+err.Error())
	}
	if dec.More() {
		return fiber.NewError(fiber.StatusUnprocessableEntity, "invalid JSON body: data after the value")
	}
	return nil
}

package api

import (
	"context"
	"errors"
	"time"
)

// The library routes (people, text in images, thumbnails, the status
// panel) read the index through the small interfaces below; mlserve serve
// implements them over its own schema (cmd/mlserve/searcher.go). Each is
// optional: a route whose interface is nil answers 503.

// People reads and edits the people that face clustering made.
type People interface {
	ListPeople(ctx context.Context, q PeopleQuery) ([]Person, error)
	Person(ctx context.Context, id int64) (Person, error)
	RenamePerson(ctx context.Context, id int64, name string) (Person, error)
	MergePeople(ctx context.Context, into int64, from []int64) (Person, error)
	PersonAssets(ctx context.Context, id int64, limit, offset int) ([]PersonAsset, error)
}

// TextSearcher finds the assets whose recognised text (OCR) matches a
// query.
type TextSearcher interface {
	SearchOCR(ctx context.Context, text string, q SearchQuery) ([]OCRHit, error)
}

// Files finds the files behind indexed assets and faces, by id only: the
// thumbnail routes never take a path from a request.
type Files interface {
	// AssetFile is the path of asset id's file.
	AssetFile(ctx context.Context, id int64) (string, error)
	// FaceFile is face id with the path of its asset's file.
	FaceFile(ctx context.Context, id int64) (string, Face, error)
}

// Library describes the index for the status panel.
type Library interface {
	LibraryInfo(ctx context.Context) (LibraryInfo, error)
}

// Errors a library implementation wraps; the routes answer them with
// 404, 422 and 501.
var (
	// ErrNotFound: no person, asset or face with the given id.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a well-formed request the library refuses (a name too
	// long, a person merged into itself).
	ErrInvalid = errors.New("invalid")
	// ErrUnsupported: this library does not offer the route (Immich's
	// database, whose people, text and files belong to the Immich server).
	ErrUnsupported = errors.New("not available")
)

// PeopleQuery selects and pages ListPeople's result.
type PeopleQuery struct {
	// MinFaces hides unnamed people with fewer faces.
	MinFaces int
	Limit    int
	Offset   int
}

// Person is a group of faces, named or not.
type Person struct {
	ID         int64
	Name       string
	FaceCount  int
	AssetCount int
	// CoverFaceID is the face that shows the person (0: none).
	CoverFaceID int64
}

// Face is one detected face.
type Face struct {
	ID      int64
	AssetID int64
	// ImageWidth and ImageHeight are the size of the image the face was
	// found in (the file decoded without EXIF orientation); Box (x1, y1,
	// x2, y2) is in its pixels.
	ImageWidth  int
	ImageHeight int
	Box         [4]float32
}

// PersonAsset is an asset in which a person appears.
type PersonAsset struct {
	AssetID int64
	// Path and RelPath are as in SearchHit.
	Path       string
	RelPath    string
	ModifiedAt time.Time
	// Face is the person's face in it.
	Face Face
}

// OCRHit is an asset whose recognised text matches a query.
type OCRHit struct {
	AssetID int64
	// Path and RelPath are as in SearchHit.
	Path    string
	RelPath string
	// Score is 1 for a substring match, else the trigram similarity.
	Score float64
	// Lines are the lines that match, best first.
	Lines []OCRLine
}

// OCRLine is a recognised line of text.
type OCRLine struct {
	Index int
	Text  string
	// Box holds the line's corners x1,y1..x4,y4 normalised to 0..1 of the
	// image's width and height.
	Box   [8]float32
	Score float64
}

// LibraryInfo is what the status panel shows about the index.
type LibraryInfo struct {
	// Mode is "mlserve" (our schema) or "immich" (Immich's database).
	Mode  string `json:"mode"`
	Model string `json:"model"`
	// Counts; -1 where the mode has none.
	Assets    int64 `json:"assets"`
	Faces     int64 `json:"faces"`
	People    int64 `json:"people"`
	TextLines int64 `json:"textLines"`
	// FuzzyText and Unaccent say how text in images is searched (the
	// pg_trgm and unaccent extensions).
	FuzzyText bool `json:"fuzzyText"`
	Unaccent  bool `json:"unaccent"`
}

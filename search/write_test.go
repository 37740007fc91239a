package search

import (
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mlserve/mlserve/internal/testenv"
)

// modes runs f with the query mode picked for PGlite (simple protocol) and
// with the one a real PostgreSQL gets (cache_describe, binary vectors);
// the latter is safe on PGlite as long as only one connection talks.
func modes(t *testing.T, f func(t *testing.T, url string)) {
	url := testenv.DatabaseURL(t)
	t.Run("auto", func(t *testing.T) { f(t, url) })
	t.Run("cache_describe", func(t *testing.T) { f(t, url+"&default_query_exec_mode=cache_describe") })
}

func results(r *mrand.Rand, n, dim int, prefix string) []Result {
	rs := make([]Result, n)
	for i := range rs {
		p := fmt.Sprintf("/photos/%s%03d.jpg", prefix, i)
		h := sha256.Sum256([]byte(p))
		rs[i] = Result{
			Asset: Asset{Path: p, Hash: h[:], Size: int64(1000 + i), ModTime: time.Unix(1700000000+int64(i), 0)},
			CLIP:  unitVec(r, dim),
		}
	}
	return rs
}

func TestWriteAndSearchCLIP(t *testing.T) {
	modes(t, func(t *testing.T, url string) {
		ctx := ctxT(t)
		s := openStore(t, Options{URL: url, MaxConns: 1})
		const model, dim = "ViT-B-32__openai", 512
		if _, err := s.EnsureModel(ctx, model, dim); err != nil {
			t.Fatal(err)
		}
		r := mrand.New(mrand.NewPCG(1, 2))
		rs := results(r, 60, dim, "a")
		if err := s.Write(ctx, model, rs); err != nil {
			t.Fatalf("Write: %v", err)
		}
		// Writing again (at-least-once delivery) changes nothing.
		if err := s.Write(ctx, model, rs[10:20]); err != nil {
			t.Fatalf("Write again: %v", err)
		}
		assets, embs, err := s.Count(ctx, model)
		if err != nil {
			t.Fatal(err)
		}
		if assets != 60 || embs != 60 {
			t.Fatalf("count: %d assets, %d embeddings; want 60, 60", assets, embs)
		}
		for _, i := range []int{0, 7, 59} {
			hits, err := s.SearchCLIP(ctx, model, rs[i].CLIP, 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(hits) != 5 || hits[0].Path != rs[i].Path || hits[0].Distance > 1e-5 {
				t.Fatalf("query = embedding of %s: hits %+v", rs[i].Path, hits)
			}
			for j := 1; j < len(hits); j++ {
				if hits[j].Distance < hits[j-1].Distance {
					t.Fatalf("hits not ordered by distance: %+v", hits)
				}
			}
		}
		// More results than HNSW's default candidate list (40).
		hits, err := s.SearchCLIP(ctx, model, rs[3].CLIP, 55)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 55 {
			t.Fatalf("limit 55: got %d hits", len(hits))
		}
		// Another process searches without EnsureModel: the registry
		// tells it where the model's embeddings are.
		other := openStore(t, Options{URL: url, Schema: s.Schema(), MaxConns: 1})
		if hits, err := other.SearchCLIP(ctx, model, rs[5].CLIP, 1); err != nil || hits[0].Path != rs[5].Path {
			t.Fatalf("search from a fresh store: %+v, %v", hits, err)
		}
		if _, err := other.SearchCLIP(ctx, "never-indexed", rs[5].CLIP, 1); !errors.Is(err, ErrUnknownModel) {
			t.Fatalf("unknown model: %v", err)
		}
		got, err := s.Embedding(ctx, model, rs[3].Path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, rs[3].CLIP) {
			t.Fatal("stored embedding differs from the written one")
		}
		// The same path twice in one batch: the last one wins.
		dup := []Result{rs[0], rs[0]}
		dup[1].CLIP = rs[1].CLIP
		if err := s.Write(ctx, model, dup); err != nil {
			t.Fatalf("Write with a repeated path: %v", err)
		}
		hits, err = s.SearchCLIP(ctx, model, rs[1].CLIP, 2)
		if err != nil {
			t.Fatal(err)
		}
		if hits[0].Distance > 1e-5 || hits[1].Distance > 1e-5 {
			t.Fatalf("after overwrite both %s and %s should match exactly: %+v", rs[0].Path, rs[1].Path, hits)
		}
	})
}

func TestWriteErrors(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	r := mrand.New(mrand.NewPCG(3, 4))
	if err := s.Write(ctx, "nope", results(r, 1, 8, "x")); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := s.EnsureModel(ctx, "m", 8); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, "m", results(r, 2, 9, "x")); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("wrong dimension: %v", err)
	}
	bad := results(r, 1, 8, "x")
	bad[0].Faces = []Face{{Embedding: make([]float32, 128)}}
	if err := s.Write(ctx, "m", bad); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("wrong face dimension: %v", err)
	}
	if _, err := s.SearchCLIP(ctx, "m", make([]float32, 9), 3); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("query dimension: %v", err)
	}
	for _, limit := range []int{0, -1, MaxLimit + 1} {
		if _, err := s.SearchCLIP(ctx, "m", make([]float32, 8), limit); !errors.Is(err, ErrInvalid) {
			t.Fatalf("limit %d: %v", limit, err)
		}
	}
	if _, err := s.SearchCLIP(ctx, "m", nil, 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty query: %v", err)
	}
	assets, _, err := s.Count(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if assets != 0 {
		t.Fatalf("failed writes left %d assets", assets)
	}
}

func TestLookup(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	r := mrand.New(mrand.NewPCG(5, 6))
	for _, m := range []string{"a", "b"} {
		if _, err := s.EnsureModel(ctx, m, 4); err != nil {
			t.Fatal(err)
		}
	}
	rs := results(r, 3, 4, "l")
	if err := s.Write(ctx, "a", rs); err != nil {
		t.Fatal(err)
	}
	// Model b re-reads a changed file 0.
	changed := rs[0]
	changed.Hash = []byte("new content")
	changed.Size = 1
	if err := s.Write(ctx, "b", []Result{changed}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(ctx, "a", []string{rs[0].Path, rs[1].Path, "/not/indexed.jpg"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("lookup: %+v", got)
	}
	if ix := got[rs[0].Path]; ix.Current || string(ix.Hash) != string(rs[0].Hash) || ix.Size != 1 {
		t.Errorf("changed file: %+v; want the old hash, the new size, not current", ix)
	}
	if ix := got[rs[1].Path]; !ix.Current || string(ix.Hash) != string(rs[1].Hash) || ix.Size != rs[1].Size || !ix.ModTime.Equal(rs[1].ModTime) {
		t.Errorf("unchanged file: %+v", ix)
	}
	gotB, err := s.Lookup(ctx, "b", []string{rs[0].Path, rs[1].Path})
	if err != nil {
		t.Fatal(err)
	}
	if len(gotB) != 1 || !gotB[rs[0].Path].Current {
		t.Errorf("model b: %+v", gotB)
	}
}

func TestFacesAndOCR(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(7, 8))
	face := func() Face {
		return Face{ImageWidth: 100, ImageHeight: 80, X1: 1, Y1: 2, X2: 30, Y2: 40, Score: 0.9,
			Landmarks: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Embedding: unitVec(r, 512)}
	}
	rs := results(r, 2, 4, "f")
	rs[0].Faces, rs[0].FaceModel = []Face{face(), face()}, "buffalo_l"
	rs[0].Faces[1].Landmarks = nil
	rs[1].Faces = []Face{} // ran, found nothing
	rs[0].OCR, rs[0].OCRModel = []OCRBox{{Box: [8]float32{0, 0, 1, 0, 1, 1, 0, 1}, BoxScore: 0.9, Text: "hello", TextScore: 0.95}, {Text: "world"}}, "PP-OCRv5_mobile"
	if err := s.Write(ctx, "m", rs); err != nil {
		t.Fatal(err)
	}
	hits, err := s.SearchFaces(ctx, rs[0].Faces[1].Embedding, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].Path != rs[0].Path || hits[0].Distance > 1e-5 {
		t.Fatalf("face search: %+v", hits)
	}
	var text string
	if err := s.Pool().QueryRow(ctx, s.expand("SELECT o.text FROM {{s}}.ocr_text o JOIN {{s}}.assets a ON a.id = o.asset_id WHERE a.path = $1"), rs[0].Path).Scan(&text); err != nil {
		t.Fatal(err)
	}
	if text != "hello world" {
		t.Errorf("ocr text %q", text)
	}
	var lm []float32
	if err := s.Pool().QueryRow(ctx, s.expand("SELECT landmarks FROM {{s}}.faces WHERE landmarks IS NOT NULL")).Scan(&lm); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lm, rs[0].Faces[0].Landmarks) {
		t.Errorf("landmarks %v", lm)
	}
	// Faces run again and find one: the two old rows are replaced. A nil
	// OCR leaves the text alone.
	rs[0].Faces = []Face{face()}
	rs[0].OCR = nil
	if err := s.Write(ctx, "m", rs[:1]); err != nil {
		t.Fatal(err)
	}
	var faces, boxes int
	if err := s.Pool().QueryRow(ctx, s.expand("SELECT (SELECT count(*) FROM {{s}}.faces), (SELECT count(*) FROM {{s}}.ocr_boxes)")).Scan(&faces, &boxes); err != nil {
		t.Fatal(err)
	}
	if faces != 1 || boxes != 2 {
		t.Errorf("after rewrite: %d faces, %d ocr boxes; want 1, 2", faces, boxes)
	}
}

func TestDeferredIndexes(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{DeferIndexes: true})
	m, err := s.EnsureModel(ctx, "m", 8)
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%USING hnsw%'", s.Schema()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d HNSW indexes before CreateIndexes", n)
	}
	if err := s.Write(ctx, "m", results(mrand.New(mrand.NewPCG(1, 1)), 20, 8, "d")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateIndexes(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	if n := count(); n != 2 { // the model's table and faces
		t.Fatalf("%d HNSW indexes after CreateIndexes, want 2 (%s and faces)", n, m.Table)
	}
}

package search

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// faceWorld builds synthetic face embeddings with known geometry: each
// identity is a random direction (random 512-d directions are nearly
// orthogonal: cosine distance ≈ 1 between identities), and its faces lie
// at a chosen cosine distance from it.
type faceWorld struct {
	r *mrand.Rand
}

// around returns a unit vector at cosine distance d from the unit vector c.
func (w faceWorld) around(c []float32, d float64) []float32 {
	u := unitVec(w.r, len(c))
	// Make u orthogonal to c, then mix: cos = 1 - d.
	var dot float64
	for i := range c {
		dot += float64(c[i]) * float64(u[i])
	}
	var n float64
	for i := range u {
		u[i] -= float32(dot) * c[i]
		n += float64(u[i]) * float64(u[i])
	}
	n = math.Sqrt(n)
	cos := 1 - d
	sin := math.Sqrt(1 - cos*cos)
	out := make([]float32, len(c))
	for i := range c {
		out[i] = float32(cos*float64(c[i]) + sin*float64(u[i])/n)
	}
	return out
}

// photo is an asset with faces; box i is at x = 100*i so boxes never
// overlap.
func photo(name string, clip []float32, embs ...[]float32) Result {
	p := "/photos/" + name + ".jpg"
	h := sha256.Sum256([]byte(p))
	r := Result{Asset: Asset{Path: p, Hash: h[:], Size: 1, ModTime: time.Unix(1700000000, 0)},
		CLIP: clip, Faces: []Face{}, FaceModel: "test"}
	for i, e := range embs {
		x := float32(100 * i)
		r.Faces = append(r.Faces, Face{ImageWidth: 1000, ImageHeight: 800, X1: x, Y1: 10, X2: x + 80, Y2: 110,
			Score: 0.9 - float32(i)/100, Embedding: e})
	}
	return r
}

// personOf maps each face to its person id (0: none). A face is named by
// its asset and its place there: "a1#2" is the face of a1 whose box starts
// at 200 of 1000 pixels (see photo), at whatever size it was stored.
func personOf(t *testing.T, s *Store) map[string]int64 {
	t.Helper()
	rows, err := s.Pool().Query(ctxT(t), s.expand(`
SELECT a.path, f.x1 * 1000 / f.image_width, coalesce(fp.person_id, 0)
FROM {{s}}.faces f JOIN {{s}}.assets a ON a.id = f.asset_id LEFT JOIN {{s}}.face_person fp ON fp.face_id = f.id`))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var path string
		var x float32
		var pid int64
		if err := rows.Scan(&path, &x, &pid); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%s#%d", strings.TrimSuffix(strings.TrimPrefix(path, "/photos/"), ".jpg"), int(x)/100)] = pid
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestClusterFacesLikeImmich(t *testing.T) {
	modes(t, func(t *testing.T, url string) {
		ctx := ctxT(t)
		s := openStore(t, Options{URL: url, MaxConns: 1})
		if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
			t.Fatal(err)
		}
		w := faceWorld{mrand.New(mrand.NewPCG(3, 4))}
		r := w.r
		alice, bob := unitVec(r, 512), unitVec(r, 512)
		pairC, lone := unitVec(r, 512), unitVec(r, 512)
		// u points from alice towards "edge": edge is 0.55 from alice
		// (outside maxDistance) but 0.05 from alice5, which leans the
		// same way (0.29 from alice).
		u := w.around(alice, 1) // orthogonal to alice
		mix := func(t float64) []float32 {
			v := make([]float32, 512)
			var n float64
			for i := range v {
				v[i] = alice[i] + float32(t)*u[i]
				n += float64(v[i]) * float64(v[i])
			}
			for i := range v {
				v[i] /= float32(math.Sqrt(n))
			}
			return v
		}
		edge, alice5 := mix(2), mix(1)
		rs := []Result{
			// The edge face comes first: it is non-core (only alice5 near)
			// and is decided after the others, when alice5 has a person.
			photo("edge", unitVec(r, 4), edge),
			photo("a1", unitVec(r, 4), w.around(alice, 0.05), w.around(bob, 0.05)),
			photo("a2", unitVec(r, 4), w.around(alice, 0.05)),
			photo("a3", unitVec(r, 4), w.around(alice, 0.05), w.around(bob, 0.05)),
			photo("a4", unitVec(r, 4), w.around(alice, 0.05), w.around(pairC, 0.02)),
			photo("a5", unitVec(r, 4), alice5),
			photo("b3", unitVec(r, 4), w.around(bob, 0.05)),
			photo("c2", unitVec(r, 4), w.around(pairC, 0.02)),
			photo("lone", unitVec(r, 4), lone),
		}
		if err := s.Write(ctx, "m", rs); err != nil {
			t.Fatal(err)
		}
		res, err := s.ClusterFaces(ctx, ClusterOptions{BatchSize: 3}) // several batches
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", res)
		got := personOf(t, s)
		a, b := got["a1#0"], got["a1#1"]
		if a == 0 || b == 0 || a == b {
			t.Fatalf("alice %d, bob %d: want two people; all: %v", a, b, got)
		}
		for _, k := range []string{"a2#0", "a3#0", "a4#0", "a5#0", "edge#0"} {
			if got[k] != a {
				t.Errorf("%s: person %d, want alice's %d", k, got[k], a)
			}
		}
		for _, k := range []string{"a3#1", "b3#0"} {
			if got[k] != b {
				t.Errorf("%s: person %d, want bob's %d", k, got[k], b)
			}
		}
		for _, k := range []string{"a4#1", "c2#0", "lone#0"} {
			if got[k] != 0 {
				t.Errorf("%s: person %d, want none (a pair is below minFaces; a lone face has no neighbour)", k, got[k])
			}
		}
		want := ClusterResult{Faces: 12, Assigned: 9, Created: 2, Unassigned: 3, Deferred: 3}
		res.Took = 0
		if res != want {
			t.Errorf("result %+v, want %+v", res, want)
		}

		// Nothing new: a second run changes nothing.
		res, err = s.ClusterFaces(ctx, ClusterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Assigned != 0 || res.Created != 0 || res.Faces != 3 {
			t.Errorf("second run: %+v; want 3 faces looked at, none placed", res)
		}
		if again := personOf(t, s); !mapsEqual(again, got) {
			t.Errorf("second run moved faces: %v, was %v", again, got)
		}
	})
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestClusterFacesIncremental(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
		t.Fatal(err)
	}
	w := faceWorld{mrand.New(mrand.NewPCG(5, 6))}
	r := w.r
	alice, bob, carol := unitVec(r, 512), unitVec(r, 512), unitVec(r, 512)
	first := []Result{
		photo("a1", unitVec(r, 4), w.around(alice, 0.1)),
		photo("a2", unitVec(r, 4), w.around(alice, 0.1), w.around(carol, 0.05)),
		photo("a3", unitVec(r, 4), w.around(alice, 0.1), w.around(carol, 0.05)),
	}
	if err := s.Write(ctx, "m", first); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClusterFaces(ctx, ClusterOptions{}); err != nil {
		t.Fatal(err)
	}
	before := personOf(t, s)
	aliceID := before["a1#0"]
	if aliceID == 0 || before["a2#1"] != 0 {
		t.Fatalf("first run: %v; want alice as a person, carol's pair unassigned", before)
	}
	if _, err := s.RenamePerson(ctx, aliceID, "Alice"); err != nil {
		t.Fatal(err)
	}

	// A later index run adds photos: more of alice, a new person bob, and a
	// third carol, which makes her pair core.
	second := []Result{
		photo("a4", unitVec(r, 4), w.around(alice, 0.1), w.around(bob, 0.1)),
		photo("b2", unitVec(r, 4), w.around(bob, 0.1)),
		photo("b3", unitVec(r, 4), w.around(bob, 0.1), w.around(carol, 0.05)),
	}
	if err := s.Write(ctx, "m", second); err != nil {
		t.Fatal(err)
	}
	res, err := s.ClusterFaces(ctx, ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := personOf(t, s)
	for k, v := range before {
		if v != 0 && after[k] != v {
			t.Errorf("%s moved from person %d to %d", k, v, after[k])
		}
	}
	if after["a4#0"] != aliceID {
		t.Errorf("new alice face: person %d, want %d", after["a4#0"], aliceID)
	}
	bobID, carolID := after["a4#1"], after["a2#1"]
	if bobID == 0 || bobID == aliceID || after["b2#0"] != bobID || after["b3#0"] != bobID {
		t.Errorf("bob: %v", after)
	}
	if carolID == 0 || carolID == aliceID || carolID == bobID || after["a3#1"] != carolID || after["b3#1"] != carolID {
		t.Errorf("carol (unassigned before, core now): %v", after)
	}
	if res.Created != 2 || res.Assigned != 7 {
		t.Errorf("second run %+v; want 2 new people, 7 faces placed", res)
	}
	p, err := s.Person(ctx, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "Alice" || p.FaceCount != 4 || p.AssetCount != 4 {
		t.Errorf("alice after the second run: %+v", p)
	}
}

func TestPeopleAPI(t *testing.T) {
	modes(t, func(t *testing.T, url string) {
		ctx := ctxT(t)
		s := openStore(t, Options{URL: url, MaxConns: 1})
		const dim = 8
		if _, err := s.EnsureModel(ctx, "m", dim); err != nil {
			t.Fatal(err)
		}
		w := faceWorld{mrand.New(mrand.NewPCG(7, 8))}
		r := w.r
		alice, bob := unitVec(r, 512), unitVec(r, 512)
		var rs []Result
		for i := range 5 {
			rs = append(rs, photo(fmt.Sprintf("a%d", i), unitVec(r, dim), w.around(alice, 0.1)))
		}
		for i := range 3 {
			rs = append(rs, photo(fmt.Sprintf("b%d", i), unitVec(r, dim), w.around(bob, 0.1)))
		}
		rs = append(rs, photo("ab", unitVec(r, dim), w.around(alice, 0.1), w.around(bob, 0.1)))
		for i := range rs {
			rs[i].ModTime = time.Unix(1700000000+int64(i), 0)
		}
		if err := s.Write(ctx, "m", rs); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ClusterFaces(ctx, ClusterOptions{}); err != nil {
			t.Fatal(err)
		}
		people, err := s.ListPeople(ctx, PeopleOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(people) != 2 || people[0].FaceCount != 6 || people[1].FaceCount != 4 || people[0].AssetCount != 6 {
			t.Fatalf("people: %+v; want alice (6 faces) then bob (4)", people)
		}
		a, b := people[0], people[1]
		if a.Cover == nil || a.Cover.Path != "/photos/a0.jpg" || a.Cover.Box != [4]float32{0, 10, 80, 110} ||
			a.Cover.ImageWidth != 1000 || a.Cover.ImageHeight != 800 || a.Cover.AssetID == 0 {
			t.Errorf("alice's cover %+v: want her founding face in a0", a.Cover)
		}
		// Named people come first.
		if _, err := s.RenamePerson(ctx, b.ID, "  Bob  "); err != nil {
			t.Fatal(err)
		}
		people, err = s.ListPeople(ctx, PeopleOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if people[0].ID != b.ID || people[0].Name != "Bob" {
			t.Errorf("after naming bob: %+v", people)
		}
		if p, err := s.ListPeople(ctx, PeopleOptions{Limit: 1, Offset: 1}); err != nil || len(p) != 1 || p[0].ID != a.ID {
			t.Errorf("page 2: %+v, %v", p, err)
		}
		if p, err := s.ListPeople(ctx, PeopleOptions{MinFaces: 5}); err != nil || len(p) != 2 {
			t.Errorf("MinFaces 5 keeps alice (6 faces) and named bob: %+v, %v", p, err)
		}
		if _, err := s.RenamePerson(ctx, b.ID, "Robert"); err != nil {
			t.Fatal(err)
		}
		if p, err := s.ListPeople(ctx, PeopleOptions{MinFaces: 5}); err != nil || len(p) != 2 {
			t.Errorf("%+v %v", p, err)
		}
		if _, err := s.RenamePerson(ctx, b.ID, ""); err != nil {
			t.Fatal(err)
		}
		if p, err := s.ListPeople(ctx, PeopleOptions{MinFaces: 5}); err != nil || len(p) != 1 || p[0].ID != a.ID {
			t.Errorf("MinFaces 5 hides unnamed bob (4 faces): %+v, %v", p, err)
		}

		// A person's assets, newest first, with the person's face.
		pa, err := s.PersonAssets(ctx, b.ID, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, x := range pa {
			paths = append(paths, x.Path)
		}
		if want := []string{"/photos/ab.jpg", "/photos/b2.jpg", "/photos/b1.jpg", "/photos/b0.jpg"}; !slices.Equal(paths, want) {
			t.Errorf("bob's assets %v, want %v", paths, want)
		}
		if pa[0].Face.Box[0] != 100 || pa[0].Face.Path != "/photos/ab.jpg" || pa[0].ModifiedAt.IsZero() {
			t.Errorf("bob's face in ab: %+v", pa[0])
		}
		// A thumbnail finds the file by the asset id.
		if a, err := s.Asset(ctx, pa[0].AssetID); err != nil || a.Path != "/photos/ab.jpg" || a.ID != pa[0].AssetID ||
			!a.ModifiedAt.Equal(rs[8].ModTime) || a.Size != 1 || a.IndexedAt.IsZero() {
			t.Errorf("Asset(%d) = %+v, %v", pa[0].AssetID, a, err)
		}
		if _, err := s.Asset(ctx, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Asset(-1): %v, want ErrNotFound", err)
		}
		// A face crop finds the face and its file by the face id.
		if f, err := s.Face(ctx, pa[0].Face.FaceID); err != nil || f != pa[0].Face {
			t.Errorf("Face(%d) = %+v, %v; want %+v", pa[0].Face.FaceID, f, err, pa[0].Face)
		}
		if _, err := s.Face(ctx, -1); !errors.Is(err, ErrNotFound) {
			t.Errorf("Face(-1): %v, want ErrNotFound", err)
		}
		if pa, err := s.PersonAssets(ctx, b.ID, 2, 3); err != nil || len(pa) != 1 || pa[0].Path != "/photos/b0.jpg" {
			t.Errorf("page: %+v, %v", pa, err)
		}

		// Text search inside one person's photos: exact, only theirs.
		q := rs[6].CLIP // b1's own embedding
		hits, err := s.SearchCLIPFiltered(ctx, "m", q, Filter{PersonID: b.ID}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 4 || hits[0].Path != "/photos/b1.jpg" || hits[0].Distance > 1e-5 {
			t.Fatalf("search in bob's photos: %+v", hits)
		}
		for i, h := range hits {
			if !strings.HasPrefix(h.Path, "/photos/b") && h.Path != "/photos/ab.jpg" {
				t.Errorf("hit %s is not bob's", h.Path)
			}
			if i > 0 && h.Distance < hits[i-1].Distance {
				t.Errorf("hits out of order: %+v", hits)
			}
		}
		all, err := s.SearchCLIPFiltered(ctx, "m", q, Filter{}, 20)
		if err != nil || len(all) != 9 {
			t.Errorf("no filter: %d hits, %v", len(all), err)
		}

		// Merge bob into alice: faces move, bob goes, alice takes his name
		// as she has none.
		if _, err := s.RenamePerson(ctx, b.ID, "Bob"); err != nil {
			t.Fatal(err)
		}
		m, err := s.MergePeople(ctx, a.ID, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != a.ID || m.Name != "Bob" || m.FaceCount != 10 || m.AssetCount != 9 || m.Cover == nil || m.Cover.FaceID != a.Cover.FaceID {
			t.Errorf("merged: %+v", m)
		}
		if _, err := s.Person(ctx, b.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("merged-away person: %v, want ErrNotFound", err)
		}
		if h, err := s.SearchCLIPFiltered(ctx, "m", q, Filter{PersonID: a.ID}, 20); err != nil || len(h) != 9 {
			t.Errorf("search after merge: %d hits, %v", len(h), err)
		}
	})
}

func TestPeopleErrors(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
		t.Fatal(err)
	}
	w := faceWorld{mrand.New(mrand.NewPCG(9, 9))}
	c := unitVec(w.r, 512)
	var rs []Result
	for i := range 3 {
		rs = append(rs, photo(fmt.Sprint("x", i), unitVec(w.r, 4), w.around(c, 0.1)))
	}
	if err := s.Write(ctx, "m", rs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClusterFaces(ctx, ClusterOptions{}); err != nil {
		t.Fatal(err)
	}
	ps, err := s.ListPeople(ctx, PeopleOptions{})
	if err != nil || len(ps) != 1 {
		t.Fatalf("%+v %v", ps, err)
	}
	id := ps[0].ID
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"person", func() error { _, err := s.Person(ctx, 999999); return err }(), ErrNotFound},
		{"rename missing", func() error { _, err := s.RenamePerson(ctx, 999999, "x"); return err }(), ErrNotFound},
		{"rename long", func() error { _, err := s.RenamePerson(ctx, id, strings.Repeat("é", 101)); return err }(), ErrInvalid},
		{"rename control", func() error { _, err := s.RenamePerson(ctx, id, "a\nb"); return err }(), ErrInvalid},
		{"rename bad utf8", func() error { _, err := s.RenamePerson(ctx, id, "a\xffb"); return err }(), ErrInvalid},
		{"merge self", func() error { _, err := s.MergePeople(ctx, id, id); return err }(), ErrInvalid},
		{"merge none", func() error { _, err := s.MergePeople(ctx, id); return err }(), ErrInvalid},
		{"merge missing", func() error { _, err := s.MergePeople(ctx, id, 999999); return err }(), ErrNotFound},
		{"assets missing", func() error { _, err := s.PersonAssets(ctx, 999999, 10, 0); return err }(), ErrNotFound},
		{"assets limit", func() error { _, err := s.PersonAssets(ctx, id, 0, 0); return err }(), ErrInvalid},
		{"assets offset", func() error { _, err := s.PersonAssets(ctx, id, 10, -1); return err }(), ErrInvalid},
		{"list limit", func() error { _, err := s.ListPeople(ctx, PeopleOptions{Limit: MaxLimit + 1}); return err }(), ErrInvalid},
		{"search person missing", func() error {
			_, err := s.SearchCLIPFiltered(ctx, "m", []float32{1, 0, 0, 0}, Filter{PersonID: 999999}, 5)
			return err
		}(), ErrNotFound},
		{"search dim", func() error {
			_, err := s.SearchCLIPFiltered(ctx, "m", []float32{1, 0}, Filter{PersonID: id}, 5)
			return err
		}(), ErrDimensionMismatch},
		{"cluster distance", func() error { _, err := s.ClusterFaces(ctx, ClusterOptions{MaxDistance: 3}); return err }(), ErrInvalid},
		{"cluster min faces", func() error { _, err := s.ClusterFaces(ctx, ClusterOptions{MinFaces: -1}); return err }(), ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// A failed merge changed nothing.
	if p, err := s.Person(ctx, id); err != nil || p.FaceCount != 3 {
		t.Errorf("after failed merge: %+v %v", p, err)
	}
}

// TestReindexKeepsPeople: writing an asset's faces again (a changed file,
// --force) keeps each face's person when the new box overlaps the old one
// (IoU > 0.5, as Immich matches detections), even at another image size;
// a face that vanished frees its person, and a person left without faces
// is removed by the next clustering.
func TestReindexKeepsPeople(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
		t.Fatal(err)
	}
	w := faceWorld{mrand.New(mrand.NewPCG(11, 12))}
	r := w.r
	alice, bob := unitVec(r, 512), unitVec(r, 512)
	rs := []Result{
		photo("p0", unitVec(r, 4), w.around(alice, 0.1), w.around(bob, 0.1)),
		photo("p1", unitVec(r, 4), w.around(alice, 0.1), w.around(bob, 0.1)),
		photo("p2", unitVec(r, 4), w.around(alice, 0.1), w.around(bob, 0.1)),
	}
	if err := s.Write(ctx, "m", rs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClusterFaces(ctx, ClusterOptions{}); err != nil {
		t.Fatal(err)
	}
	before := personOf(t, s)
	aliceID, bobID := before["p0#0"], before["p0#1"]
	if aliceID == 0 || bobID == 0 || aliceID == bobID {
		t.Fatalf("%v", before)
	}
	if _, err := s.RenamePerson(ctx, bobID, "Bob"); err != nil {
		t.Fatal(err)
	}
	// p0 again at half the size, boxes a little off: both keep their
	// people. p1 again with alice only: bob's face there is gone.
	p0 := rs[0]
	p0.Faces = slices.Clone(p0.Faces)
	for i := range p0.Faces {
		f := &p0.Faces[i]
		f.ImageWidth, f.ImageHeight = 500, 400
		f.X1, f.Y1, f.X2, f.Y2 = f.X1/2+3, f.Y1/2+2, f.X2/2+3, f.Y2/2+2
	}
	p1 := rs[1]
	p1.Faces = p1.Faces[:1]
	// p2's alice face moved far away (another face now): no person.
	p2 := rs[2]
	p2.Faces = slices.Clone(p2.Faces)
	p2.Faces[0].X1, p2.Faces[0].X2 = 600, 680
	if err := s.Write(ctx, "m", []Result{p0, p1, p2}); err != nil {
		t.Fatal(err)
	}
	after := personOf(t, s)
	if after["p0#0"] != aliceID || after["p0#1"] != bobID || after["p1#0"] != aliceID || after["p2#1"] != bobID {
		t.Errorf("after rewrite: %v; want alice %d, bob %d kept", after, aliceID, bobID)
	}
	if after["p2#6"] != 0 {
		t.Errorf("moved face kept a person: %v", after)
	}
	// bob's cover (his founding face, in p0) was rewritten: the next best
	// face stands in, and clustering points the cover at it.
	b, err := s.Person(ctx, bobID)
	if err != nil || b.Cover == nil || b.FaceCount != 2 {
		t.Fatalf("bob %+v %v", b, err)
	}
	// Every face of bob gone: the next clustering removes him.
	for _, p := range []Result{p0, p2} {
		p.Faces = p.Faces[:1]
		if err := s.Write(ctx, "m", []Result{p}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.ClusterFaces(ctx, ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 {
		t.Errorf("removed %d people, want bob", res.Removed)
	}
	if _, err := s.Person(ctx, bobID); !errors.Is(err, ErrNotFound) {
		t.Errorf("bob without faces: %v", err)
	}
	a, err := s.Person(ctx, aliceID)
	if err != nil || a.Cover == nil {
		t.Errorf("alice %+v %v", a, err)
	}
}

// TestClusterUsesHNSW checks the plan of the neighbour search: pgvector's
// HNSW index, not a scan of every face per face.
func TestClusterUsesHNSW(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	if _, err := s.EnsureModel(ctx, "m", 4); err != nil {
		t.Fatal(err)
	}
	w := faceWorld{mrand.New(mrand.NewPCG(13, 14))}
	var rs []Result
	for i := range 50 {
		rs = append(rs, photo(fmt.Sprint("h", i), unitVec(w.r, 4), unitVec(w.r, 512)))
	}
	if err := s.Write(ctx, "m", rs); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	// The planner prefers a sequential scan over 50 rows; tell it not to,
	// as it would not over thousands.
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := tx.QueryRow(ctx, s.expand("SELECT min(id) FROM {{s}}.faces")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, "EXPLAIN "+s.expand(strings.NewReplacer("$1", fmt.Sprintf("'{%d,%d}'", id, id+1), "$2", "40", "$3", "0.5").Replace(neighbourSQL)))
	if err != nil {
		t.Fatal(err)
	}
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	rows.Close()
	if !strings.Contains(plan.String(), "Index Scan using faces_embedding_idx") {
		t.Errorf("neighbour search does not use the HNSW index:\n%s", plan.String())
	}
}

// BenchmarkClusterFaces clusters 400 faces of 40 people (synthetic
// embeddings) from scratch per iteration:
// `go test ./search -run '^$' -bench ClusterFaces -benchtime 5x`.
func BenchmarkClusterFaces(b *testing.B) {
	ctx := ctxT(b)
	s := openStore(b, Options{})
	w := faceWorld{mrand.New(mrand.NewPCG(15, 16))}
	const people, per = 40, 10
	centres := make([][]float32, people)
	for i := range centres {
		centres[i] = unitVec(w.r, 512)
	}
	var rs []Result
	for k := range per {
		for i := range people {
			rs = append(rs, photo(fmt.Sprintf("b%d-%d", i, k), nil, w.around(centres[i], 0.15)))
		}
	}
	if err := s.Write(ctx, "", rs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if _, err := s.Pool().Exec(ctx, s.expand("DELETE FROM {{s}}.people")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := s.ClusterFaces(ctx, ClusterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Created != people || res.Assigned != len(rs) {
			b.Fatalf("%+v", res)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(rs))/1000, "ms/face")
}

// TestClusterFacesConcurrent: two runs at once (two processes, or a
// worker and a CLI) interleave their batches under the people lock and
// place every face once, with one person per identity.
func TestClusterFacesConcurrent(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	w := faceWorld{mrand.New(mrand.NewPCG(17, 18))}
	const people, per = 6, 4
	centres := make([][]float32, people)
	for i := range centres {
		centres[i] = unitVec(w.r, 512)
	}
	var rs []Result
	for k := range per {
		for i := range people {
			rs = append(rs, photo(fmt.Sprintf("c%d-%d", i, k), nil, w.around(centres[i], 0.1)))
		}
	}
	if err := s.Write(ctx, "", rs); err != nil {
		t.Fatal(err)
	}
	results := make([]ClusterResult, 2)
	errs := make([]error, 2)
	done := make(chan int)
	for i := range 2 {
		go func() {
			results[i], errs[i] = s.ClusterFaces(ctx, ClusterOptions{BatchSize: 2})
			done <- i
		}()
	}
	<-done
	<-done
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if c, a := results[0].Created+results[1].Created, results[0].Assigned+results[1].Assigned; c != people || a != len(rs) {
		t.Errorf("two runs created %d people and placed %d faces, want %d and %d: %+v", c, a, people, len(rs), results)
	}
	got := personOf(t, s)
	for i := range people {
		p := got[fmt.Sprintf("c%d-0#0", i)]
		for k := range per {
			if q := got[fmt.Sprintf("c%d-%d#0", i, k)]; q == 0 || q != p {
				t.Errorf("identity %d: faces in people %d and %d", i, p, q)
			}
		}
	}
}

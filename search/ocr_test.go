package search

import (
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// ocrPhotos are assets with recognised lines; line i of an asset has the
// box x = i/10 .. i/10 + 0.1, so a line is known by its box.
var ocrPhotos = map[string][]string{
	"receipt": {"ACME Store", "Receipt 42", "Total: 12.50 €"},
	"cafe":    {"Crème Brûlée", "Café de Flore"},
	"sign":    {"Meet at the", "lighthouse"},
	"tokyo":   {"東京都庁"},
	"pct":     {"100% sure", "a_b"},
	"other":   {"axb", "1000 sure"},
	"bare":    {},
}

func writeOCR(t *testing.T, s *Store) {
	t.Helper()
	var rs []Result
	for name, lines := range ocrPhotos {
		p := "/photos/" + name + ".jpg"
		h := sha256.Sum256([]byte(p))
		r := Result{Asset: Asset{Path: p, Hash: h[:], Size: 1}, OCR: []OCRBox{}, OCRModel: "PP-OCRv5_mobile"}
		for i, l := range lines {
			x := float32(i) / 10
			r.OCR = append(r.OCR, OCRBox{Box: [8]float32{x, 0.5, x + 0.1, 0.5, x + 0.1, 0.6, x, 0.6}, BoxScore: 0.9, Text: l, TextScore: 0.95})
		}
		rs = append(rs, r)
	}
	if err := s.Write(ctxT(t), "", rs); err != nil {
		t.Fatal(err)
	}
}

// ocrResult is a hit in short: "asset: line|line".
func ocrResult(t *testing.T, hits []OCRHit) []string {
	t.Helper()
	var out []string
	for _, h := range hits {
		name := strings.TrimSuffix(strings.TrimPrefix(h.Path, "/photos/"), ".jpg")
		var lines []string
		for _, l := range h.Lines {
			lines = append(lines, l.Text)
			want := ocrPhotos[name][l.Index]
			x := float32(l.Index) / 10
			if l.Text != want || l.Box != [8]float32{x, 0.5, x + 0.1, 0.5, x + 0.1, 0.6, x, 0.6} {
				t.Errorf("%s line %d: %q %v; want %q at x %v", name, l.Index, l.Text, l.Box, want, x)
			}
			if l.Score < 0 || l.Score > 1 {
				t.Errorf("%s line %q: score %v", name, l.Text, l.Score)
			}
		}
		if h.AssetID == 0 || h.Score <= 0 || h.Score > 1 {
			t.Errorf("%s: id %d score %v", name, h.AssetID, h.Score)
		}
		out = append(out, name+": "+strings.Join(lines, "|"))
	}
	return out
}

func TestSearchOCR(t *testing.T) {
	modes(t, func(t *testing.T, url string) {
		ctx := ctxT(t)
		s := openStore(t, Options{URL: url, MaxConns: 1})
		if ts := s.TextSearch(); !ts.Fuzzy || !ts.Unaccent {
			t.Fatalf("text search %+v: the test server loads pg_trgm and unaccent (scripts/services.sh)", ts)
		}
		writeOCR(t, s)
		for _, tc := range []struct {
			q    string
			want []string
		}{
			// Substrings, case ignored.
			{"receipt 4", []string{"receipt: Receipt 42"}},
			{"acme STORE", []string{"receipt: ACME Store"}},
			{"12.50", []string{"receipt: Total: 12.50 €"}},
			// Accents ignored on both sides.
			{"creme brulee", []string{"cafe: Crème Brûlée"}},
			{"CAFÉ", []string{"cafe: Café de Flore"}},
			{"cafe", []string{"cafe: Café de Flore"}},
			// Fuzzy: a typo (strict word similarity 0.62).
			{"lighthose", []string{"sign: lighthouse"}},
			// A query over two lines: the lines with its words.
			{"meet at the lighthouse", []string{"sign: Meet at the|lighthouse"}},
			// CJK: substrings of a run, and the whole run.
			{"京都", []string{"tokyo: 東京都庁"}},
			{"東京都庁", []string{"tokyo: 東京都庁"}},
			// LIKE's wildcards are literal.
			// "100%" is in pct; pg_trgm, which ignores "%", finds "1000"
			// similar enough (0.8): a fuzzy hit, after the exact one.
			{"100%", []string{"pct: 100% sure", "other: 1000 sure"}},
			{"a_b", []string{"pct: a_b"}},
			{"%", []string{"pct: 100% sure"}},
			{"zebra", nil},
		} {
			hits, err := s.SearchOCR(ctx, tc.q, 10)
			if err != nil {
				t.Fatalf("%q: %v", tc.q, err)
			}
			if got := ocrResult(t, hits); !slices.Equal(got, tc.want) {
				t.Errorf("%q: %q, want %q", tc.q, got, tc.want)
			}
		}
		// Scores: a substring is 1, a fuzzy match less, best first.
		hits, err := s.SearchOCR(ctx, "sure", 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := ocrResult(t, hits); len(got) != 2 || hits[0].Score != 1 || hits[0].AssetID > hits[1].AssetID {
			t.Errorf("sure: %q %+v", got, hits)
		}
		hits, err = s.SearchOCR(ctx, "lighthose", 10)
		if err != nil || len(hits) != 1 || hits[0].Score >= 1 || hits[0].Score < OCRSimilarity {
			t.Errorf("fuzzy score: %+v %v", hits, err)
		}
		if hits, err := s.SearchOCR(ctx, "sure", 1); err != nil || len(hits) != 1 {
			t.Errorf("limit 1: %+v %v", hits, err)
		}
	})
}

func TestSearchOCRUsesTrigramIndex(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	writeOCR(t, s)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	sql := strings.NewReplacer("$1", "'receipt'", "$2", "'{receipt}'", "$3", "10", "$4", "0.5", "$5", "'receipt'").Replace(s.ocrSQL())
	rows, err := tx.Query(ctx, "EXPLAIN "+sql)
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
	if !strings.Contains(plan.String(), "ocr_text_trgm_idx") {
		t.Errorf("OCR search does not use the trigram index:\n%s", plan.String())
	}
}

// TestSearchOCRWithoutExtensions: a server without pg_trgm and unaccent
// still finds substrings (case ignored, accents not), and a later start
// with them upgrades the same schema.
func TestSearchOCRWithoutExtensions(t *testing.T) {
	ctx := ctxT(t)
	schema := testSchema(t)
	s := openStore(t, Options{Schema: schema, noTextExtensions: true})
	if ts := s.TextSearch(); ts.Fuzzy || ts.Unaccent {
		t.Fatalf("%+v", ts)
	}
	writeOCR(t, s)
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"RECEIPT 4", []string{"receipt: Receipt 42"}},
		{"Crème", []string{"cafe: Crème Brûlée"}},
		{"creme", nil},     // accents must match
		{"lighthose", nil}, // no fuzzy match
		{"meet at the lighthouse", []string{"sign: Meet at the|lighthouse"}},
		{"a_b", []string{"pct: a_b"}},
	} {
		hits, err := s.SearchOCR(ctx, tc.q, 10)
		if err != nil {
			t.Fatalf("%q: %v", tc.q, err)
		}
		if got := ocrResult(t, hits); !slices.Equal(got, tc.want) {
			t.Errorf("without extensions, %q: %q, want %q", tc.q, got, tc.want)
		}
	}
	var idx bool
	if err := s.Pool().QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.table("ocr_text_trgm_idx")).Scan(&idx); err != nil || idx {
		t.Fatalf("trigram index without pg_trgm: %v %v", idx, err)
	}

	s2 := openStore(t, Options{Schema: schema})
	if ts := s2.TextSearch(); !ts.Fuzzy || !ts.Unaccent {
		t.Fatalf("%+v", ts)
	}
	for q, want := range map[string]string{"creme": "cafe: Crème Brûlée", "lighthose": "sign: lighthouse"} {
		hits, err := s2.SearchOCR(ctx, q, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := ocrResult(t, hits); !slices.Equal(got, []string{want}) {
			t.Errorf("after upgrade, %q: %q, want %q", q, got, want)
		}
	}
	if err := s.Pool().QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.table("ocr_text_trgm_idx")).Scan(&idx); err != nil || !idx {
		t.Errorf("trigram index after upgrade: %v %v", idx, err)
	}
}

func TestSearchOCRErrors(t *testing.T) {
	ctx := ctxT(t)
	s := openStore(t, Options{})
	for _, tc := range []struct {
		q     string
		limit int
	}{
		{"", 10}, {" \t\n", 10}, {strings.Repeat("a", MaxOCRQuery+1), 10}, {"a\xffb", 10},
		{"a\x00b", 10}, {"ok", 0}, {"ok", MaxLimit + 1},
	} {
		if _, err := s.SearchOCR(ctx, tc.q, tc.limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("SearchOCR(%q, %d): %v, want ErrInvalid", tc.q, tc.limit, err)
		}
	}
}

func TestTokenizeForSearch(t *testing.T) {
	for in, want := range map[string][]string{
		"":                  nil,
		"  Receipt \t42\n":  {"Receipt", "42"},
		"東京都庁":              {"東京", "京都", "都庁"},
		"東":                 {"東"},
		"abc東京def":          {"abc", "東京", "def"},
		"서울 특별시":            {"서울", "특별", "별시"},
		"カタカナ ひらがな":         {"カタ", "タカ", "カナ", "ひら", "らが", "がな"},
		"Crème\u00a0Brûlée": {"Crème\u00a0Brûlée"}, // NBSP is above 32: Immich keeps it
	} {
		if got := tokenizeForSearch(in); !slices.Equal(got, want) {
			t.Errorf("tokenizeForSearch(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzTokenizeForSearch(f *testing.F) {
	for _, s := range []string{"", "Receipt 42", "東京都庁", "a東b", "\xff\xfe", "x\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks := tokenizeForSearch(s)
		for _, tok := range toks {
			if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= 32 }) {
				t.Fatalf("token %q of %q", tok, s)
			}
			if n := utf8.RuneCountInString(tok); n > 2 && strings.ContainsFunc(tok, isCJK) {
				t.Fatalf("CJK token %q of %q longer than a bigram", tok, s)
			}
		}
		// Without CJK, tokens are the fields split at code points ≤ 32.
		if !strings.ContainsFunc(s, isCJK) {
			want := strings.FieldsFunc(string([]rune(s)), func(r rune) bool { return r <= 32 })
			if !slices.Equal(toks, want) && (len(toks) != 0 || len(want) != 0) {
				t.Fatalf("tokens %q, fields %q", toks, want)
			}
		}
	})
}

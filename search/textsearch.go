package search

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// OCRSimilarity is the strict word similarity (pg_trgm) from which OCR
// text matches a query fuzzily: pg_trgm's default threshold, the one
// Immich's `%>>` search uses.
const OCRSimilarity = 0.5

// MaxOCRQuery bounds an OCR search text, in bytes.
const MaxOCRQuery = 256

// TextSearch says how this database searches recognised text.
type TextSearch struct {
	// Fuzzy is true when pg_trgm is installed: text matches a query by
	// trigram strict word similarity as well as by substring, and a GIN
	// trigram index serves both. Without it only substrings match (ILIKE,
	// no index).
	Fuzzy bool `json:"fuzzy"`
	// Unaccent is true when the unaccent extension is installed: accents are
	// ignored on both sides ("creme" finds "Crème"). Without it they must
	// match.
	Unaccent bool `json:"unaccent"`
}

// TextSearch reports what Open found.
func (s *Store) TextSearch() TextSearch {
	return TextSearch{Fuzzy: s.text.trgm != "", Unaccent: s.text.unaccent != ""}
}

// textSearch holds the schemas of the extensions OCR search uses; "" for a
// missing one.
type textSearch struct {
	trgm     string
	unaccent string
}

// setupTextSearch makes sure what OCR search needs exists, as far as the
// server allows: the pg_trgm and unaccent extensions (created when missing
// and available; both are trusted extensions, so a database owner may),
// {{s}}.f_unaccent (Immich's immutable wrapper around unaccent, or the
// identity without it) and a GIN trigram index on it over ocr_text, as
// Immich indexes ocr_search. It runs in the migration's transaction, under
// its lock.
func (s *Store) setupTextSearch(ctx context.Context, tx pgx.Tx) (textSearch, error) {
	var ts textSearch
	var err error
	if !s.noTextExt {
		if ts.trgm, err = s.extension(ctx, tx, "pg_trgm"); err != nil {
			return ts, err
		}
		if ts.unaccent, err = s.extension(ctx, tx, "unaccent"); err != nil {
			return ts, err
		}
	}
	body := "SELECT $1"
	if ts.unaccent != "" {
		// Qualified names: the function must not depend on search_path.
		body = fmt.Sprintf("SELECT %[1]s.unaccent('%[1]s.unaccent'::regdictionary, $1)", ts.unaccent)
	}
	var current string
	err = tx.QueryRow(ctx, `
SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1::text AND p.proname = 'f_unaccent'`, s.schema).Scan(&current)
	if err != nil && !isNoRows(err) {
		return ts, fmt.Errorf("text search: %w", err)
	}
	if strings.TrimSpace(current) != body {
		// The index holds values of the old definition: rebuild it.
		if _, err := tx.Exec(ctx, s.expand(`
DROP INDEX IF EXISTS {{s}}.ocr_text_trgm_idx;
CREATE OR REPLACE FUNCTION {{s}}.f_unaccent(text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
	AS $f$ `+body+` $f$`)); err != nil {
			return ts, fmt.Errorf("text search: f_unaccent: %w", err)
		}
	}
	if ts.trgm != "" {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.table("ocr_text_trgm_idx")).Scan(&exists); err != nil {
			return ts, fmt.Errorf("text search: %w", err)
		}
		if !exists {
			if _, err := tx.Exec(ctx, s.expand(fmt.Sprintf(
				"CREATE INDEX ocr_text_trgm_idx ON {{s}}.ocr_text USING gin ({{s}}.f_unaccent(text) %s.gin_trgm_ops)", ts.trgm))); err != nil {
				return ts, fmt.Errorf("text search: trigram index: %w", err)
			}
		}
	}
	if ts.trgm == "" || ts.unaccent == "" {
		s.logger.Warn("OCR search is reduced: extension missing",
			"pg_trgm", ts.trgm != "", "unaccent", ts.unaccent != "",
			"effect", "without pg_trgm only substrings match (no fuzzy match, no index); without unaccent accents must match")
	}
	return ts, nil
}

// extension returns the schema of extension name, creating the extension
// when the server offers it and it is missing. It returns "" when the
// extension is unavailable or cannot be created here (no right to): the
// caller falls back.
func (s *Store) extension(ctx context.Context, tx pgx.Tx, name string) (string, error) {
	const q = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = $1::text`
	var schema string
	err := tx.QueryRow(ctx, q, name).Scan(&schema)
	if isNoRows(err) {
		var available bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1::text)", name).Scan(&available); err != nil {
			return "", fmt.Errorf("extension %s: %w", name, err)
		}
		if !available {
			return "", nil
		}
		// A savepoint: a refused CREATE must not abort the migration.
		sp, berr := tx.Begin(ctx)
		if berr != nil {
			return "", fmt.Errorf("extension %s: %w", name, berr)
		}
		if _, cerr := sp.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS "+pgx.Identifier{name}.Sanitize()); cerr != nil {
			_ = sp.Rollback(ctx)
			s.logger.Warn("cannot create extension", "extension", name, "err", cerr)
			return "", nil
		}
		if cerr := sp.Commit(ctx); cerr != nil {
			return "", fmt.Errorf("extension %s: %w", name, cerr)
		}
		// Read again what CREATE made (err is the outer one: a := here
		// would shadow it and leave the first lookup's "no rows").
		err = tx.QueryRow(ctx, q, name).Scan(&schema)
	}
	if err != nil {
		return "", fmt.Errorf("extension %s: %w", name, err)
	}
	if !validIdent(schema) {
		// Its name goes into SQL text below; refuse anything unusual.
		s.logger.Warn("extension in a schema with an unusual name: not used", "extension", name, "schema", schema)
		return "", nil
	}
	return schema, nil
}

// isCJK reports the code points Immich's tokenizeForSearch treats as CJK.
func isCJK(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0xAC00 && r <= 0xD7AF ||
		r >= 0x3040 && r <= 0x30FF || r >= 0x3400 && r <= 0x4DBF
}

// tokenizeForSearch splits text as Immich's tokenizeForSearch does: on
// code points up to 32 (spaces and controls), and runs of CJK characters
// into overlapping bigrams (a lone CJK character stays one token), so that
// trigram word similarity works for scripts written without spaces.
func tokenizeForSearch(text string) []string {
	var tokens []string
	rs := []rune(text)
	for i := 0; i < len(rs); {
		if rs[i] <= 32 {
			i++
			continue
		}
		start := i
		if isCJK(rs[i]) {
			for i < len(rs) && isCJK(rs[i]) {
				i++
			}
			if i-start == 1 {
				tokens = append(tokens, string(rs[start]))
				continue
			}
			for k := start; k < i-1; k++ {
				tokens = append(tokens, string(rs[k:k+2]))
			}
			continue
		}
		for i < len(rs) && rs[i] > 32 && !isCJK(rs[i]) {
			i++
		}
		tokens = append(tokens, string(rs[start:i]))
	}
	return tokens
}

// OCRLine is one recognised line of an OCR hit.
type OCRLine struct {
	// Index is the line's position in the asset's OCR result.
	Index int `json:"index"`
	// Text is the line as recognised.
	Text string `json:"text"`
	// Box holds the line's four corners x1,y1..x4,y4, normalised to 0..1
	// of the image's width and height.
	Box [8]float32 `json:"box"`
	// Score is how well the line matches: 1 when it contains the query,
	// else the strict word similarity of the query to the line (0 without
	// pg_trgm).
	Score float64 `json:"score"`
}

// OCRHit is one asset whose recognised text matches an OCR search.
type OCRHit struct {
	AssetID int64  `json:"assetId"`
	Path    string `json:"path"`
	// Score is 1 when the asset's text contains the query (accents and
	// case ignored), else the trigram strict word similarity of the query
	// to the text (OCRSimilarity up to 1).
	Score float64 `json:"score"`
	// Lines are the lines that match the query by themselves, best first:
	// those that contain it, or, when the asset matched fuzzily, those
	// similar enough to it. When none does (the query runs over several
	// lines), they are the lines that match one of its words, in reading
	// order. Empty when no line matches even a word.
	Lines []OCRLine `json:"lines"`
}

// SearchOCR finds assets whose recognised text matches query: as a
// substring (case and, with unaccent, accents ignored), or, with pg_trgm,
// fuzzily: the query's tokens (split as Immich's tokenizeForSearch splits
// them) have a strict word similarity of at least OCRSimilarity to the
// asset's text — Immich's `f_unaccent(text) %>> f_unaccent(query)`. Hits
// come best first, then by asset id, with their matching lines and boxes.
func (s *Store) SearchOCR(ctx context.Context, query string, limit int) ([]OCRHit, error) {
	if limit <= 0 || limit > MaxLimit {
		return nil, fmt.Errorf("%w: limit %d: want 1..%d", ErrInvalid, limit, MaxLimit)
	}
	if len(query) > MaxOCRQuery || !utf8.ValidString(query) || strings.ContainsRune(query, 0) {
		return nil, fmt.Errorf("%w: OCR query: want valid UTF-8 of at most %d bytes", ErrInvalid, MaxOCRQuery)
	}
	tokens := tokenizeForSearch(query)
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: empty OCR query", ErrInvalid)
	}
	raw := strings.Join(strings.Fields(query), " ")
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("ocr search: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	if s.text.trgm != "" {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL pg_trgm.strict_word_similarity_threshold = %g", OCRSimilarity)); err != nil {
			return nil, fmt.Errorf("ocr search: %w", err)
		}
	}
	args := []any{raw, tokens, limit, OCRSimilarity}
	if s.text.trgm != "" {
		args = append(args, strings.Join(tokens, " "))
	}
	rows, err := tx.Query(ctx, s.ocrSQL(), args...)
	if err != nil {
		return nil, fmt.Errorf("ocr search: %w", err)
	}
	var hits []OCRHit
	for rows.Next() {
		var (
			id    int64
			path  string
			score float64
			idx   *int
			text  *string
			box   []float32
			ls    *float64
		)
		if err := rows.Scan(&id, &path, &score, &idx, &text, &box, &ls); err != nil {
			rows.Close()
			return nil, fmt.Errorf("ocr search: %w", err)
		}
		if len(hits) == 0 || hits[len(hits)-1].AssetID != id {
			hits = append(hits, OCRHit{AssetID: id, Path: path, Score: score, Lines: []OCRLine{}})
		}
		if idx == nil { // no line matches alone
			continue
		}
		l := OCRLine{Index: *idx, Text: *text, Score: *ls}
		copy(l.Box[:], box)
		h := &hits[len(hits)-1]
		h.Lines = append(h.Lines, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ocr search: %w", err)
	}
	return hits, tx.Commit(ctx)
}

// ocrSQL is SearchOCR's statement for the extensions at hand. Parameters:
// $1 the query with its white space collapsed, $2 its tokens, $3 the
// limit, $4 OCRSimilarity and, with pg_trgm only, $5 its tokens joined by
// spaces.
//
// Assets are found through ocr_text (one row per asset, tokens joined, GIN
// trigram index on f_unaccent(text)); their lines are then scored from
// ocr_boxes. The LIKE pattern is built in SQL after unaccent, so that the
// query's own %, _ and \ match literally.
func (s *Store) ocrSQL() string {
	fold := s.table("f_unaccent")
	like := func(x string) string {
		return fmt.Sprintf(`('%%' || replace(replace(replace(%s(%s), E'\\', E'\\\\'), '%%', E'\\%%'), '_', E'\\_') || '%%')`, fold, x)
	}
	sim := func(q, text string) string { return "0::real" }
	fuzzy := ""
	if t := s.text.trgm; t != "" {
		sim = func(q, text string) string {
			return fmt.Sprintf("%s.strict_word_similarity(%s(%s), %s(%s))", t, fold, q, fold, text)
		}
		fuzzy = fmt.Sprintf(" OR %s(t.text) OPERATOR(%s.%%>>) %s($5)", fold, t, fold)
	}
	return fmt.Sprintf(`
WITH hits AS (
	SELECT t.asset_id, %[1]s(t.text) ILIKE %[2]s AS sub,
		CASE WHEN %[1]s(t.text) ILIKE %[2]s THEN 1 ELSE %[3]s END AS score
	FROM %[4]s t
	WHERE %[1]s(t.text) ILIKE %[2]s%[5]s
	ORDER BY score DESC, t.asset_id
	LIMIT $3
), lines AS (
	SELECT h.asset_id, b.idx, b.text, b.box,
		CASE WHEN %[1]s(b.text) ILIKE %[2]s THEN 1 ELSE %[6]s END AS line_score,
		%[1]s(b.text) ILIKE %[2]s OR (NOT h.sub AND %[6]s >= $4) AS good,
		EXISTS (SELECT 1 FROM unnest($2::text[]) w
			WHERE %[1]s(b.text) ILIKE %[7]s OR %[8]s >= $4) AS partial
	FROM hits h JOIN %[9]s b ON b.asset_id = h.asset_id
), marked AS (
	SELECT l.*, bool_or(l.good) OVER (PARTITION BY l.asset_id) AS any_good
	FROM lines l
), chosen AS (
	SELECT * FROM marked m WHERE m.good OR (NOT m.any_good AND m.partial)
)
SELECT h.asset_id, a.path, h.score::float8, c.idx, c.text, c.box, c.line_score::float8
FROM hits h
JOIN %[10]s a ON a.id = h.asset_id
LEFT JOIN chosen c ON c.asset_id = h.asset_id
ORDER BY h.score DESC, h.asset_id,
	CASE WHEN c.any_good THEN c.line_score ELSE 0 END DESC, c.idx`,
		fold, like("$1"), sim("$5", "t.text"), s.table("ocr_text"), fuzzy,
		sim("$5", "b.text"), like("w"), sim("w", "b.text"), s.table("ocr_boxes"), s.table("assets"))
}

package main

import (
	"context"
	"image"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/internal/testenv"
)

// TestCLIIndexFacesAndText indexes two real photos (7 faces) and a page
// of rendered text with --faces and --ocr: faces and text land in our
// schema beside the CLIP embeddings. The face pack is the npm test pack
// (not Immich's models); PP-OCRv4 stands in for PP-OCRv5 in the cache.
func TestCLIIndexFacesAndText(t *testing.T) {
	cliEnv(t, "")
	installAnalysisModels(t)
	dir := t.TempDir()
	for _, name := range []string{"sample1.jpg", "sample4.jpg"} {
		b, err := os.ReadFile(testenv.TestData(t, "photos/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeTextPNG(t, filepath.Join(dir, "note.png"), "Meet at the lighthouse")

	schema := cliSchema(t)
	out := runCLI(t, "index", "--schema", schema, "--faces", "buffalo_l", "--ocr", "PP-OCRv5_mobile", dir)
	if !strings.Contains(out, "indexed 3 of 3 images (0 failed)") {
		t.Fatalf("index output:\n%s", out)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var faces int
	q := "SELECT count(*) FROM " + pgx.Identifier{schema, "faces"}.Sanitize() + " WHERE model = 'buffalo_l'"
	if err := conn.QueryRow(ctx, q, pgx.QueryExecModeSimpleProtocol).Scan(&faces); err != nil {
		t.Fatal(err)
	}
	if faces != 7 {
		t.Fatalf("%d faces stored, want 7 (3 in sample1, 4 in sample4)", faces)
	}
	var text string
	q = "SELECT t.text FROM " + pgx.Identifier{schema, "ocr_text"}.Sanitize() + " t JOIN " + pgx.Identifier{schema, "assets"}.Sanitize() + " a ON a.id = t.asset_id WHERE a.path LIKE '%note.png'"
	if err := conn.QueryRow(ctx, q, pgx.QueryExecModeSimpleProtocol).Scan(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "Meet at the lighthouse") {
		t.Fatalf("OCR text %q", text)
	}
	// Immich's tables are never written with faces or text.
	var errb strings.Builder
	if code := run([]string{"index", "--immich", "--faces", "buffalo_l"}, &errb, &errb); code == 0 || !strings.Contains(errb.String(), "Immich") {
		t.Fatalf("--immich --faces: exit %d, %s", code, errb.String())
	}
}

// installAnalysisModels puts the face and OCR models of the tests into the
// model cache of cliEnv: the npm face pack as buffalo_l, PP-OCRv4 as
// PP-OCRv5_mobile.
func installAnalysisModels(t *testing.T) {
	t.Helper()
	cache := os.Getenv("MACHINE_LEARNING_CACHE_FOLDER")
	if err := face.WriteTestPack(filepath.Join(cache, "facial-recognition", "buffalo_l"),
		testenv.TestData(t, "models/faceplugin/fr_detect.onnx"),
		testenv.TestData(t, "models/faceplugin/fr_landmark.onnx"),
		testenv.TestData(t, "models/faceplugin/fr_feature.onnx")); err != nil {
		t.Fatal(err)
	}
	ocrDir := filepath.Join(cache, "ocr", "PP-OCRv5_mobile")
	for src, dst := range map[string]string{
		"models/ppocr/ch_PP-OCRv4_det_infer.onnx": "detection/model.onnx",
		"models/ppocr/ch_PP-OCRv4_rec_infer.onnx": "recognition/model.onnx",
		"models/ppocr/ppocr_keys_v1.txt":          "recognition/ppocr_keys_v1.txt",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(ocrDir, dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(testenv.TestData(t, src), filepath.Join(ocrDir, dst)); err != nil {
			t.Fatal(err)
		}
	}
}

// writeTextPNG renders text (lines split at \n) black on white.
func writeTextPNG(t *testing.T, path, text string) {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := opentype.NewFace(f, &opentype.FaceOptions{Size: 40, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text, "\n")
	im := image.NewRGBA(image.Rect(0, 0, 700, 80+60*len(lines)))
	draw.Draw(im, im.Bounds(), image.White, image.Point{}, draw.Src)
	for i, line := range lines {
		d := font.Drawer{Dst: im, Src: image.Black, Face: fc, Dot: fixed.P(30, 80+60*i)}
		d.DrawString(line)
	}
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := png.Encode(out, im); err != nil {
		t.Fatal(err)
	}
}

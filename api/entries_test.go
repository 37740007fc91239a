package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/mlserve/mlserve/pool"
)

func TestParseEntries(t *testing.T) {
	t.Run("immich requests", func(t *testing.T) {
		for _, doc := range []string{
			`{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`,
			`{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"de"}}}}`,
			`{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}`,
			`{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.5,"maxResolution":736}},"recognition":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.8}}}}`,
		} {
			if _, err := ParseEntries([]byte(doc)); err != nil {
				t.Errorf("%s: %v", doc, err)
			}
		}
	})
	t.Run("order and options kept", func(t *testing.T) {
		es, err := ParseEntries([]byte(`{"facial-recognition":{"recognition":{"modelName":"b"},"detection":{"modelName":"a","options":{"minScore":0.034}}},"clip":{"visual":{"modelName":"c"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 3 || es[0].Type != "recognition" || es[1].Type != "detection" || es[2].Task != "clip" {
			t.Fatalf("entries %+v", es)
		}
		if string(es[1].Options["minScore"]) != "0.034" {
			t.Fatalf("options %v", es[1].Options)
		}
	})
	for name, doc := range map[string]string{
		"not json":          `{"clip":`,
		"array":             `[1,2]`,
		"string":            `"clip"`,
		"task not object":   `{"clip":3}`,
		"entry string":      `{"clip":{"visual":"ViT-B-32__openai"}}`,
		"entry number":      `{"clip":{"visual":12}}`,
		"entry null":        `{"clip":{"visual":null}}`,
		"no modelName":      `{"clip":{"visual":{"options":{}}}}`,
		"modelName number":  `{"clip":{"visual":{"modelName":5}}}`,
		"options not obj":   `{"clip":{"visual":{"modelName":"a","options":[1]}}}`,
		"trailing garbage":  `{"clip":{"visual":{"modelName":"a"}}} x`,
		"two documents":     `{} {}`,
		"empty":             ``,
		"deep nonsense":     `{"a":{"b":{"modelName":"x","options":{"k":` + "\x00" + `}}}}`,
		"truncated unicode": "{\"clip\":{\"visual\":{\"modelName\":\"\\ud8",
	} {
		if _, err := ParseEntries([]byte(doc)); !errors.Is(err, errInvalidFormat) {
			t.Errorf("%s: err = %v, want errInvalidFormat", name, err)
		}
	}
}

// FuzzParseEntries: any bytes give entries or errInvalidFormat, never a
// panic; entries written back as JSON parse to the same entries.
func FuzzParseEntries(f *testing.F) {
	for _, s := range []string{
		`{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}`,
		`{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}`,
		`{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":0.5,"maxResolution":736}}}}`,
		`{"clip":{"textual":{"modelName":"nllb-clip-base-siglip__v1","options":{"language":"pt-BR"}}}}`,
		`{}`, `[]`, `{"a":{"b":null}}`, `{"a":{"b":{"modelName":null}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseEntries(data)
		if err != nil {
			if !errors.Is(err, errInvalidFormat) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		again, err := ParseEntries(encodeEntries(t, es))
		if err != nil {
			t.Fatalf("re-encoded entries do not parse: %v", err)
		}
		if len(es) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(normalize(es), normalize(again)) {
			t.Fatalf("round trip changed entries:\n%+v\n%+v", es, again)
		}
	})
}

func encodeEntries(t *testing.T, es []pool.Entry) []byte {
	t.Helper()
	b := []byte("{")
	byTask := map[string][]pool.Entry{}
	var order []string
	for _, e := range es {
		if _, ok := byTask[e.Task]; !ok {
			order = append(order, e.Task)
		}
		byTask[e.Task] = append(byTask[e.Task], e)
	}
	for i, task := range order {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(task)
		b = append(append(b, k...), ':', '{')
		for j, e := range byTask[task] {
			if j > 0 {
				b = append(b, ',')
			}
			k, _ := json.Marshal(e.Type)
			v, err := json.Marshal(map[string]any{"modelName": e.ModelName, "options": e.Options})
			if err != nil {
				t.Fatal(err)
			}
			b = append(append(append(b, k...), ':'), v...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// normalize groups entries by task in first-seen order, as re-encoding does.
func normalize(es []pool.Entry) []pool.Entry {
	var order []string
	by := map[string][]pool.Entry{}
	for _, e := range es {
		if _, ok := by[e.Task]; !ok {
			order = append(order, e.Task)
		}
		if e.Options == nil {
			e.Options = map[string]json.RawMessage{}
		}
		for k, v := range e.Options {
			var x any
			if json.Unmarshal(v, &x) != nil {
				continue // not JSON: compared as sent
			}
			c, _ := json.Marshal(x)
			e.Options[k] = c
		}
		by[e.Task] = append(by[e.Task], e)
	}
	var out []pool.Entry
	for _, task := range order {
		out = append(out, by[task]...)
	}
	return out
}

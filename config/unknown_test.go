package config

import (
	"errors"
	"strings"
	"testing"
)

func TestUnknownVariables(t *testing.T) {
	c, err := LoadEnviron([]string{
		"MACHINE_LEARNING_MODEL_TTLL=300",                         // typo
		"machine_learning_model_ttl=5",                            // Immich reads any case; we do not
		"MLSERVE_PROVIDER=CPU",                                    // a letter short
		"MLSERVE_SOMETHING_ELSE_ENTIRELY=1",                       // nothing near
		"MACHINE_LEARNING_RKNN=true",                              // Immich's, ignored here
		"MLSERVE_TESTDATA=/x", "MLSERVE_TEST_REDIS_URL=redis://x", // the tests'
		"PATH=/bin", "IMMICH_VERSION=v2", "MLSERVE_PROVIDERS=CPU",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, u := range c.Unknown() {
		got[u.Name] = u.Message()
	}
	want := map[string]string{
		"MACHINE_LEARNING_MODEL_TTLL":     "did you mean MACHINE_LEARNING_MODEL_TTL?",
		"machine_learning_model_ttl":      "did you mean MACHINE_LEARNING_MODEL_TTL? (names are case-sensitive)",
		"MLSERVE_PROVIDER":                "did you mean MLSERVE_PROVIDERS?",
		"MLSERVE_SOMETHING_ELSE_ENTIRELY": "mlserve does not read it",
		"MACHINE_LEARNING_RKNN":           "an Immich setting that mlserve ignores",
	}
	if len(got) != len(want) {
		t.Errorf("unknown = %v", got)
	}
	for name, msg := range want {
		if !strings.Contains(got[name], msg) {
			t.Errorf("%s: %q, want it to contain %q", name, got[name], msg)
		}
	}
}

// A typo is named with the error it causes.
func TestUnknownVariableInError(t *testing.T) {
	_, err := LoadEnviron([]string{"MACHINE_LEARNING_MODEL_TTL=-5", "MLSERVE_PROVIDRS=CPU"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "MACHINE_LEARNING_MODEL_TTL") ||
		!strings.Contains(err.Error(), "did you mean MLSERVE_PROVIDERS?") {
		t.Fatalf("err = %v", err)
	}
}

func TestOutOfRangeAndBadURLs(t *testing.T) {
	for _, kv := range [][2]string{
		{"MACHINE_LEARNING_MODEL_TTL", "-1"}, {"MACHINE_LEARNING_MODEL_TTL_POLL_S", "-3"},
		{"MACHINE_LEARNING_WORKER_TIMEOUT", "-0.5"}, {"MLSERVE_SHUTDOWN_TIMEOUT", "1e20"},
		{"MLSERVE_DATABASE_URL", "postgres://u:Secret-pw-1@host:notaport/db"},
		{"MLSERVE_DATABASE_URL", "postgres://u:Secret-pw-1@[::1/db"},
		{"MLSERVE_REDIS_URL", "redis://u:Secret-pw-1@127.0.0.1:badport/0"},
		{"MLSERVE_REDIS_URL", "http://u:Secret-pw-1@host:6379"},
		{"HF_ENDPOINT", "huggingface.co"}, {"MLSERVE_OCR_BASE_URL", "ftp://mirror/x"},
		{"MLSERVE_LOG_FORMAT", "xml"},
	} {
		_, err := Load(env(kv[0], kv[1]))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: err = %v", kv[0], kv[1], err)
			continue
		}
		if strings.Contains(err.Error(), "Secret-pw-1") {
			t.Errorf("%s: the error shows the password: %v", kv[0], err)
		}
	}
	c, err := Load(env("MLSERVE_DATABASE_URL", "host=db user=immich password=x dbname=immich",
		"MLSERVE_REDIS_URL", "rediss://default:x@queue:6380/2", "MLSERVE_LOG_FORMAT", "JSON", "IMMICH_LOG_LEVEL", "debug"))
	if err != nil {
		t.Fatal(err)
	}
	if c.LogFormat != "json" || !c.LogLevelSet {
		t.Fatalf("log format %q, level set %v", c.LogFormat, c.LogLevelSet)
	}
	if c, _ := Load(env()); c.LogLevelSet || c.LogFormat != "text" || c.ORTLibrary != "" {
		t.Fatalf("defaults: %q %v %q", c.LogFormat, c.LogLevelSet, c.ORTLibrary)
	}
}

package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHTTPHardeningDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPReadTimeout != 10*time.Second || c.HTTPWriteTimeout != 30*time.Second || c.MaxConns != 4096 ||
		c.MaxInflightBytes != 128<<20 || c.ShutdownTimeout != 8*time.Second || c.APIKey != "" ||
		c.SearchPublic || c.MetricsPrivate || len(c.AllowCIDRs) != 0 || c.KeepAlive != 2*time.Second {
		t.Fatalf("%+v", c)
	}
	// The drain never outlasts a shorter worker timeout; the byte budget
	// holds the largest upload.
	c, err = Load(env("MACHINE_LEARNING_WORKER_TIMEOUT", "3", "MLSERVE_MAX_UPLOAD_BYTES", "209715200"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ShutdownTimeout != 3*time.Second || c.MaxInflightBytes != 208<<20 {
		t.Fatalf("shutdown %v, in-flight %d", c.ShutdownTimeout, c.MaxInflightBytes)
	}
}

func TestHTTPHardeningVariables(t *testing.T) {
	c, err := Load(env(
		"MLSERVE_HTTP_READ_TIMEOUT_S", "2.5", "MLSERVE_HTTP_WRITE_TIMEOUT_S", "4",
		"MLSERVE_HTTP_MAX_CONNS", "100", "MLSERVE_MAX_INFLIGHT_BYTES", "209715200",
		"MLSERVE_SHUTDOWN_TIMEOUT", "20", "MLSERVE_API_KEY", "s3cret-key",
		"MLSERVE_SEARCH_PUBLIC", "true", "MLSERVE_METRICS_PRIVATE", "1",
		"MLSERVE_ALLOW_CIDRS", "192.168.1.0/24, 10.0.0.7,fd00::/8",
	))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.0.0.7/32"), netip.MustParsePrefix("fd00::/8")}
	if c.HTTPReadTimeout != 2500*time.Millisecond || c.HTTPWriteTimeout != 4*time.Second || c.MaxConns != 100 ||
		c.MaxInflightBytes != 200<<20 || c.ShutdownTimeout != 20*time.Second || c.APIKey != "s3cret-key" ||
		!c.SearchPublic || !c.MetricsPrivate || len(c.AllowCIDRs) != 3 {
		t.Fatalf("%+v", c)
	}
	for i := range want {
		if c.AllowCIDRs[i] != want[i] {
			t.Fatalf("CIDRs %v, want %v", c.AllowCIDRs, want)
		}
	}
	for _, e := range c.Table() {
		if strings.Contains(e.Value, "s3cret") {
			t.Fatal("MLSERVE_API_KEY appears in the logged table")
		}
	}
	for _, kv := range [][2]string{
		{"MLSERVE_HTTP_READ_TIMEOUT_S", "0"}, {"MLSERVE_HTTP_WRITE_TIMEOUT_S", "x"},
		{"MLSERVE_HTTP_MAX_CONNS", "3"}, {"MLSERVE_MAX_INFLIGHT_BYTES", "2048"},
		{"MLSERVE_ALLOW_CIDRS", "10.0.0.0/33"}, {"MLSERVE_ALLOW_CIDRS", "lan"},
		{"MLSERVE_SEARCH_PUBLIC", "perhaps"},
	} {
		if _, err := Load(env(kv[0], kv[1])); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: err = %v", kv[0], kv[1], err)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one `mlserve serve` process on a loopback port.
type server struct {
	cmd  *exec.Cmd
	url  string
	log  string
	done chan error
}

// startServer starts mlserve serve with the model cache and providers, and
// waits for /ping. extra is added to the environment (ONNX Runtime library,
// TTL...).
func startServer(ctx context.Context, bin, cache, providers string, port int, logPath string, extra ...string) (*server, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(),
		"IMMICH_HOST=127.0.0.1", "IMMICH_PORT="+strconv.Itoa(port),
		"MACHINE_LEARNING_CACHE_FOLDER="+cache, "MLSERVE_PROVIDERS="+providers,
		"HF_HUB_OFFLINE=1", "IMMICH_LOG_LEVEL=info")
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	s := &server{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), log: logPath, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); f.Close() }()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("mlserve serve (%s) exited: %v; log: %s", providers, err, tail(logPath, 2000)) //nolint:errorlint // err is nil when serve exited 0, and %w would print %!w(<nil>)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get(s.url + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
	}
	s.stop()
	return nil, fmt.Errorf("mlserve serve (%s) did not answer /ping in 90 s; log: %s", providers, tail(logPath, 2000))
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 20 s before killing.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		s.done <- <-s.done
	}
}

// reply is one /predict answer.
type reply struct {
	Status   int
	Provider string // X-Mlserve-Provider
	Body     []byte
}

// predict sends a request as the Immich server builds it (undici's
// FormData: "entries" first, then the image blob or the text).
func predict(url, entries string, img []byte, text string) (reply, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.WriteField("entries", entries); err != nil {
		return reply{}, err
	}
	if img != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			return reply{}, err
		}
		if _, err := p.Write(img); err != nil {
			return reply{}, err
		}
	} else if err := w.WriteField("text", text); err != nil {
		return reply{}, err
	}
	if err := w.Close(); err != nil {
		return reply{}, err
	}
	client := &http.Client{Timeout: 5 * time.Minute}
	resp, err := client.Post(url+"/predict", w.FormDataContentType(), &buf)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return reply{Status: resp.StatusCode, Provider: resp.Header.Get("X-Mlserve-Provider"), Body: body}, err
}

// replyErr is err, or an error with the status and the start of the body
// of an answer other than 200.
func replyErr(r reply, err error) error {
	if err != nil {
		return err
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("status %d: %s", r.Status, trunc(string(r.Body), 300))
	}
	return nil
}

func clipVisualEntries() string {
	return fmt.Sprintf(`{"clip":{"visual":{"modelName":%q}}}`, clipModel)
}

func clipTextualEntries() string {
	return fmt.Sprintf(`{"clip":{"textual":{"modelName":%q,"options":{}}}}`, clipModel)
}

func faceEntries(minScore float64) string {
	return fmt.Sprintf(`{"facial-recognition":{"detection":{"modelName":%q,"options":{"minScore":%g}},"recognition":{"modelName":%q}}}`,
		faceModel, minScore, faceModel)
}

// embedding reads Immich's CLIP answer: the vector as a JSON string.
func embedding(body []byte) ([]float64, error) {
	var r struct{ Clip string }
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	var v []float64
	if err := json.Unmarshal([]byte(r.Clip), &v); err != nil {
		return nil, fmt.Errorf("clip %q: %w", trunc(r.Clip, 80), err)
	}
	return v, nil
}

type faceOut struct {
	Box       [4]float64
	Score     float64
	Embedding []float64
}

// faces reads Immich's facial-recognition answer.
func faces(body []byte) ([]faceOut, error) {
	var r struct {
		Faces []struct {
			BoundingBox struct{ X1, Y1, X2, Y2 float64 }
			Embedding   string
			Score       float64
		} `json:"facial-recognition"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	out := make([]faceOut, len(r.Faces))
	for i, f := range r.Faces {
		out[i] = faceOut{Box: [4]float64{f.BoundingBox.X1, f.BoundingBox.Y1, f.BoundingBox.X2, f.BoundingBox.Y2}, Score: f.Score}
		if err := json.Unmarshal([]byte(f.Embedding), &out[i].Embedding); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// getJSON fetches a JSON document (any status).
func getJSON(url string) (map[string]any, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	return v, json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v)
}

// metricLines returns the /metrics lines of mlserve's own series that
// mention a provider, a device or GPU memory.
func metricLines(url string) []string {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "mlserve_") && !strings.Contains(l, "_bucket{") && (strings.Contains(l, "provider") || strings.Contains(l, "device") ||
			strings.Contains(l, "gpu") || strings.Contains(l, "vram")) && len(out) < 40 {
			out = append(out, l)
		}
	}
	return out
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(filepath.Clean(path))
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
